"""`pip install .` installs one import package, `asyncinf`, and nothing named runtime/robots."""

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow  # builds a wheel: about ten seconds
def test_the_wheel_holds_only_the_asyncinf_package(tmp_path):
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(tmp_path), str(ROOT)],
        check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    (wheel,) = tmp_path.glob("asyncinf-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert {n.split("/")[0] for n in names} == {
        "asyncinf",
        wheel.name.split("-py")[0] + ".dist-info",
    }
    for sub in ("runtime", "transports", "robots", "policies", "transports/shm", "transports/grpc"):
        assert f"asyncinf/{sub}/__init__.py" in names, sub
    assert "asyncinf/transports/grpc/asyncinf.proto" in names
    assert "asyncinf/__init__.py" not in names  # a namespace: the four folders share it
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    assert (
        "asyncinf = asyncinf.runtime.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()
    )


def test_the_robot_side_imports_without_torch_grpc_or_opencv():
    code = (
        "import sys\n"
        "import asyncinf.runtime.client, asyncinf.runtime.supervise.worker\n"
        "import asyncinf.runtime.supervise.supervisor\n"
        "import asyncinf.transports.shm, asyncinf.transports.factory\n"
        "import asyncinf.robots.so_follower, asyncinf.robots.sim.robot, asyncinf.runtime.cli\n"
        "print(sorted(m for m in ('torch', 'grpc', 'cv2') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    assert out.stdout.strip() == "[]"
