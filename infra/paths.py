"""Where things live in the repository, so no module guesses with relative paths.

The CDK app is run from the repository root by ``npx cdk`` but imported from
anywhere by the tests and the local cloud; anchoring on this file works for both.
"""

from __future__ import annotations

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
CDK_JSON = REPO_ROOT / "cdk.json"
LAYERS_DIR = REPO_ROOT / "layers"
RUNTIME_PACKAGE_DIR = LAYERS_DIR / "stratus"
LAYER_REQUIREMENTS = LAYERS_DIR / "requirements.txt"
FUNCTIONS_DIR = REPO_ROOT / "functions"
