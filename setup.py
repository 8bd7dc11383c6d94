"""Ships ``conf/`` inside the wheel as ``insarslide/conf`` so a non-editable install finds its configs
(:func:`insarslide.config.config_dir`); everything else is in pyproject.toml."""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py


class BuildWithConfigs(build_py):
    def run(self):
        super().run()
        if getattr(self, "editable_mode", False):
            return  # an editable install reads the checkout's conf/ in place
        target = Path(self.build_lib) / "insarslide" / "conf"
        shutil.copytree(Path(__file__).parent / "conf", target, dirs_exist_ok=True)


setup(cmdclass={"build_py": BuildWithConfigs})
