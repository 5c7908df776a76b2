"""Synthetic demo data written in the three real on-disk layouts (GRAZPEDWRI-DX, MURA v1.1, hospital).

The files reproduce the documented formats and their traps (README, "The datasets"): a BOM-prefixed 17-column
`dataset.csv` with `1`-or-empty flags and 16-bit PNGs spread over nested `images_partN` folders; MURA's
header-less CSVs, per-study labels, RGB-stored PNGs, another study type and AppleDouble junk; a hospital tree
with PNG, JPEG and DICOM files (one MONOCHROME1, both carrying fake PHI), offline-augmented copies and a partial
`metadata.csv`. The ingest code that reads the demo is therefore the code that reads the real data.

Every image carries a learnable signal: a forearm (radius, ulna, carpals, metacarpals) in soft tissue, and for
label 1 a dark fracture gap across the distal radius with a displaced distal fragment, sized relative to the
image so that it survives downsizing to 64 px. Nuisances (rotation, exposure, noise, side markers, casts,
metal) appear in both classes.

Layers: `render.make_radiograph` and the `plan_*` functions of `kaggle`, `mura` and `hospital` (on the shared
types of `plan`) are pure (a numpy Generator in, arrays or tables out); `dicom` writes the DICOM files;
`run.run_synth` renders the plans, writes everything into a temporary folder and renames it into place.
"""

from fracture.synth.run import run_synth

__all__ = ["run_synth"]
