"""The configs ship inside the package: a wheel holds lipspace/conf/**, and `lipspace-train` composes from an
installed wheel with no checkout (no top-level conf/) around it."""

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import lipspace
from lipspace.utils.config import CONF_DIR, PACKAGE_CONF_DIR

ROOT = Path(__file__).resolve().parents[1]


def _package_yamls() -> set[str]:
    return {f"lipspace/conf/{p.relative_to(PACKAGE_CONF_DIR).as_posix()}" for p in PACKAGE_CONF_DIR.rglob("*.yaml")}


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """A wheel built offline from a copy of the sources (the checkout's own tree gets no build/ or egg-info)."""
    src = tmp_path_factory.mktemp("src")
    shutil.copytree(ROOT / "src", src / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    out = tmp_path_factory.mktemp("wheel")
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", str(src), "--no-deps", "--no-build-isolation",
                           "--no-index", "-q", "-w", str(out)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (whl,) = out.glob("lipspace-*.whl")
    return whl


def test_conf_dir_is_the_package_data():
    assert PACKAGE_CONF_DIR == Path(lipspace.__file__).resolve().parent / "conf"
    if not os.environ.get("LIPSPACE_CONF"):
        assert CONF_DIR == PACKAGE_CONF_DIR
    assert (PACKAGE_CONF_DIR / "train.yaml").is_file()


def test_top_level_conf_is_the_package_conf():
    """The repository's conf/ is a user-facing link to the package's configs, never a second copy to keep in sync."""
    top = ROOT / "conf"
    if top.exists():
        assert top.resolve() == PACKAGE_CONF_DIR


def test_wheel_holds_every_config(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "lipspace/conf/train.yaml" in names
    missing = _package_yamls() - names
    assert not missing, f"configs missing from the wheel: {sorted(missing)}"
    groups = {p.name for p in PACKAGE_CONF_DIR.iterdir() if p.is_dir() and not p.name.startswith("_")}
    assert all(any(n.startswith(f"lipspace/conf/{g}/") for n in names) for g in groups)


def test_installed_wheel_runs_lipspace_train_without_a_checkout(wheel, tmp_path):
    """pip install of the wheel into a bare folder; run from a directory with no conf/: `lipspace-train --cfg job`
    and compose_train both find train.yaml and every group in the installed package."""
    site = tmp_path / "site"
    proc = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "-q", "--target",
                           str(site), str(wheel)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    work = tmp_path / "elsewhere"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "LIPSPACE_CONF"}
    env["PYTHONPATH"] = str(site)  # before the checkout's editable install on sys.path
    code = ("import sys, lipspace, lipspace.utils.config as c; from lipspace.cli.train import main; "
            "print('CONF', c.CONF_DIR, lipspace.__file__); "
            "cfg = c.compose_train(['experiment=synctalk', 'renderer=mlp'], 'run'); "
            "print('TARGET', cfg.renderer._target_); "
            "sys.argv = ['lipspace-train', 'experiment=adnerf', 'budget=paper', '--cfg', 'job']; main()")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=work, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    conf_line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("CONF"))
    assert str(site / "lipspace" / "conf") in conf_line and str(ROOT) not in conf_line
    assert "TARGET lipspace.renderers.nerf.NeRFRenderer" in proc.stdout
    assert "budget_name: paper" in proc.stdout and "_target_: lipspace.conditioners.deepspeech" in proc.stdout
