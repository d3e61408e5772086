import sys
from pathlib import Path

# plugin modules used by the tests (user-registered methods) live next to this file
sys.path.insert(0, str(Path(__file__).parent))
