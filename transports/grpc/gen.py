"""Regenerate the committed protobuf/gRPC code from `asyncinf.proto`.

    python -m asyncinf.transports.grpc.gen            # rewrite the files beside the .proto
    python -m asyncinf.transports.grpc.gen OUT_DIR    # write them to OUT_DIR instead

The .proto is compiled from a temporary tree `asyncinf/transports/grpc/asyncinf.proto`, so
protoc's generated import reads `from asyncinf.transports.grpc import asyncinf_pb2` and the
descriptor's file name is unique in the process-wide pool. Needs `grpcio-tools` (dev extra).
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
PROTO = HERE / "asyncinf.proto"
PACKAGE_DIR = Path("asyncinf", "transports", "grpc")
OUTPUTS = ("asyncinf_pb2.py", "asyncinf_pb2_grpc.py")


def generate(out_dir: Path) -> list[Path]:
    """Compile the .proto into `out_dir`; returns the written files."""
    from grpc_tools import protoc  # noqa: PLC0415  (dev-only dependency)

    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp, "src")
        dst = Path(tmp, "out")
        (src / PACKAGE_DIR).mkdir(parents=True)
        dst.mkdir()
        shutil.copyfile(PROTO, src / PACKAGE_DIR / PROTO.name)
        rc = protoc.main(
            [
                "grpc_tools.protoc",
                f"-I{src}",
                f"--python_out={dst}",
                f"--grpc_python_out={dst}",
                str(PACKAGE_DIR / PROTO.name),
            ]
        )
        if rc != 0:
            raise RuntimeError(f"protoc failed with exit code {rc} on {PROTO}")
        written = []
        for name in OUTPUTS:
            target = out_dir / name
            shutil.copyfile(dst / PACKAGE_DIR / name, target)
            written.append(target)
    return written


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    out = Path(args[0]) if args else HERE
    for path in generate(out):
        print(path)  # a developer tool's output
    return 0


if __name__ == "__main__":
    sys.exit(main())
