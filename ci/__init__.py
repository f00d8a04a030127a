"""The torch-segment-ops wheel pipeline as one small tool: ``python -m ci <verb>``."""
