"""The one packaging step pyproject.toml cannot declare: the wheel carries the top-level `sql/` inside the worker
package (worker/sql/), where worker.sqlfiles finds it once installed.

Why a copy at build time: `sql/` stays where the layout puts it (a top-level directory of numbered migrations and
named queries, beside the code that loads it), which package-data cannot reach (it only takes files inside a
package), data-files would scatter under sys.prefix, and a symlink breaks on checkouts without them. An editable
install and a checkout read `sql/` in place, so only a real wheel build copies.
"""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent


class BuildPy(build_py):
    def run(self) -> None:
        super().run()
        if not self.editable_mode:
            shutil.copytree(ROOT / "sql", Path(self.build_lib) / "worker" / "sql", dirs_exist_ok=True)


setup(cmdclass={"build_py": BuildPy})
