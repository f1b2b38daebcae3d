import sys
from pathlib import Path

# Test helper modules (golden.py, mp_reference.py) live beside the tests.
sys.path.insert(0, str(Path(__file__).resolve().parent))
