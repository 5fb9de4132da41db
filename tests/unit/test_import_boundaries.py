"""rag, finetune and serving are libraries: they never import the gateway or each other."""

import subprocess
import sys

import pytest

FORBIDDEN = {
    "rag": ["gateway", "finetune", "serving", "fastapi", "starlette"],
    "finetune": ["gateway", "rag", "fastapi", "starlette"],
    "serving": ["gateway", "rag", "finetune", "fastapi", "starlette"],
}


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_library_does_not_import_forbidden_packages(package: str) -> None:
    code = (
        "import importlib, pkgutil, sys\n"
        f"pkg = importlib.import_module({package!r})\n"
        "for m in pkgutil.walk_packages(pkg.__path__, pkg.__name__ + '.'):\n"
        "    try:\n"
        "        importlib.import_module(m.name)\n"
        "    except ImportError:\n"
        "        pass  # an optional extra that is not installed\n"
        "print(' '.join(sorted({n.split('.')[0] for n in sys.modules})))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.split()
    leaked = [name for name in FORBIDDEN[package] if name in out]
    assert not leaked, f"{package} imports {leaked}"
