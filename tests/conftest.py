import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# Appended (not prepended) so `import ci` and `import tests...` work while
# `import torch_segment_ops` still resolves to the installed copy first.
if str(ROOT) not in sys.path:
    sys.path.append(str(ROOT))
