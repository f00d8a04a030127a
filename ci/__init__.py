"""The torch-segment wheel pipeline as one small tool: ``python -m ci <verb>``."""
