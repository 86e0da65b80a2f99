"""Hatch build hook: napari.yaml and sample_data/ stay at the top level, the package finds them.

npe2 reads the manifest that the entry point names (``napari_style_transfer:napari.yaml``)
from the package's folder. No symbolic links (a Windows checkout turns them into text files):

- a wheel gets both, inside the package, through hatch's force-include;
- an editable install's package folder is the checkout's src/napari_style_transfer/: it gets
  a copy of napari.yaml (ignored by git), rewritten on every editable (re)install, and no
  copies in site-packages. The sample data need no copy: ``_sample_data.sample_dir`` falls
  back to the checkout's sample_data/.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from hatchling.builders.hooks.plugin.interface import BuildHookInterface

#: Top-level path -> path inside the wheel.
BUNDLED = {
    "napari.yaml": "napari_style_transfer/napari.yaml",
    "sample_data": "napari_style_transfer/sample_data",
}


class BundleTopLevelFiles(BuildHookInterface):
    PLUGIN_NAME = "bundle-top-level-files"

    def initialize(self, version: str, build_data: dict) -> None:
        root = Path(self.root)
        if version == "editable":
            shutil.copyfile(root / "napari.yaml", root / "src" / "napari_style_transfer" / "napari.yaml")
        else:
            build_data["force_include"].update(
                {str(root / source): target for source, target in BUNDLED.items()}
            )
