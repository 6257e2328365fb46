"""Build hook: ship the top-level pipelines/ and firmware_profiles/ inside the wheel, and
the demo's picture (samples/inbox/camera.png, for ``python -m plotterd.demo``).

Everything else is declared in pyproject.toml. The top-level folders stay the one editable
source; a wheel gets copies in plotterd/_bundled/ (found by plotterd.bundled.bundled_dir).
"""

from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

BUNDLED = ("pipelines", "firmware_profiles")
DEMO_PICTURE = Path("samples", "inbox", "camera.png")


class BuildPyWithBundled(build_py):
    def run(self) -> None:
        super().run()
        if getattr(self, "editable_mode", False):
            return  # an editable install reads the top-level folders in place
        for name in BUNDLED:
            target = Path(self.build_lib) / "plotterd" / "_bundled" / name
            self.mkpath(str(target))
            for src in sorted(Path(name).glob("*.yaml")):
                self.copy_file(str(src), str(target / src.name))
        samples = Path(self.build_lib) / "plotterd" / "_bundled" / "samples"
        self.mkpath(str(samples))
        self.copy_file(str(DEMO_PICTURE), str(samples / DEMO_PICTURE.name))


setup(cmdclass={"build_py": BuildPyWithBundled})
