"""The package builds offline (the in-tree PEP 517 backend) into a wheel with py.typed."""

from __future__ import annotations

import os
import sys
import tempfile
import unittest
import zipfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "build_backend"))

import converge_build  # noqa: E402


class PackagingTest(unittest.TestCase):
    def test_wheel_holds_every_module_and_the_typed_marker(self) -> None:
        with tempfile.TemporaryDirectory() as d:
            name = converge_build.build_wheel(d)
            self.assertEqual(name, "converge_client-0.1.0-py3-none-any.whl")
            with zipfile.ZipFile(os.path.join(d, name)) as z:
                names = set(z.namelist())
                record = z.read("converge_client-0.1.0.dist-info/RECORD").decode()
            pkg = os.path.join(os.path.dirname(HERE), "converge_client")
            for f in os.listdir(pkg):
                if f.endswith(".py") or f == "py.typed":
                    self.assertIn(f"converge_client/{f}", names)
                    self.assertIn(f"converge_client/{f},sha256=", record)
            self.assertIn("converge_client-0.1.0.dist-info/METADATA", names)
            self.assertEqual(converge_build.get_requires_for_build_wheel(), [])

    def test_sdist_builds(self) -> None:
        with tempfile.TemporaryDirectory() as d:
            self.assertTrue(converge_build.build_sdist(d).endswith(".tar.gz"))


if __name__ == "__main__":
    unittest.main()
