"""The LeRobot robot plugins of these tests, installed the way pip installs a distribution.

`install(root)` writes each plugin's module and its `.dist-info` into `root`, where
`importlib.metadata` finds installed distributions once `root` is on sys.path or
PYTHONPATH (so LeRobot's `register_third_party_plugins()` does). The tests' conftest uses it;
so does scripts/bench_lerobot.sh, to run the benchmarks on the plugin robot:
`python tests/lerobot_env/lerobot_plugins.py DIR` installs into DIR.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

# Distribution name -> the file that is its module.
PLUGINS = {
    "lerobot_robot_tinyarm": "tinyarm_plugin.py",
    "lerobot_robot_widowxai_test": "widowxai_plugin.py",  # a Trossen-shaped pair of tinyarms
}


def install(root: Path) -> Path:
    for name, source in PLUGINS.items():
        package = root / name
        package.mkdir(parents=True)
        shutil.copy(Path(__file__).with_name(source), package / "__init__.py")
        info = root / f"{name}-0.1.0.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1.0\n")
        (info / "top_level.txt").write_text(name + "\n")
    return root


if __name__ == "__main__":
    install(Path(sys.argv[1]))
