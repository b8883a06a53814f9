"""Peak memory of decoding hostile-but-small images (issue 16), each in a fresh process.

    python benchmarks/decode_memory.py

Prints one line per file: accepted or refused, and the decoding process's peak RSS (Linux).
"""

import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CASES = [("I;16", 7000, "png"), ("I;16", 6500, "png"), ("RGB", 7000, "jpg"), ("RGBA", 7000, "png")]
MEASURE = """
import sys
sys.path.insert(0, {repo!r})
from classifier.ml.images import InvalidImage, decode_image
data = open(sys.argv[1], "rb").read()
try:
    d = decode_image(data)
    verdict = f"accepted {{d.width}}x{{d.height}}"
except InvalidImage as e:
    verdict = f"refused ({{e}})"
# VmHWM, not ru_maxrss: the latter keeps the forking parent's peak across exec.
hwm = next(line for line in open("/proc/self/status") if line.startswith("VmHWM"))
print(f"{{verdict}}; peak RSS {{int(hwm.split()[1]) / 1024:.0f}} MB")
"""


def main() -> None:
    from PIL import Image

    with tempfile.TemporaryDirectory() as folder:
        for mode, side, suffix in CASES:
            path = Path(folder) / f"{mode.replace(';', '')}-{side}.{suffix}"
            Image.new(mode, (side, side), 1000 if mode.startswith("I") else (10, 200, 30, 90)[:len(mode)]).save(path)
            done = subprocess.run([sys.executable, "-c", MEASURE.format(repo=str(REPO)), str(path)],
                                  capture_output=True, text=True, check=True)
            print(f"{mode} {side}x{side} {suffix} ({path.stat().st_size:,} bytes): {done.stdout.strip()}")


if __name__ == "__main__":
    main()
