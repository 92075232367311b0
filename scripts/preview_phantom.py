"""Save a PNG of axial, coronal and sagittal slices of a CT at window [-100, 400].

Usage:
    python scripts/preview_phantom.py --seed 3 --shape 512 512 160 --out /tmp/phantom.png
    python scripts/preview_phantom.py --image scan.nii.gz [--label seg.nii.gz] --out scan.png
"""

from __future__ import annotations

import argparse

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import nibabel as nib
import numpy as np

from pipeline.data.synth.phantom import PhantomConfig, generate_phantom


def _load(args: argparse.Namespace) -> tuple[np.ndarray, np.ndarray | None, tuple, str]:
    if args.image:
        img = nib.as_closest_canonical(nib.load(args.image))
        label = None
        if args.label:
            label = np.asarray(nib.as_closest_canonical(nib.load(args.label)).dataobj)
            if args.liver_value is not None:
                label = (label == args.liver_value).astype(np.uint8)
        return np.asarray(img.dataobj), label, img.header.get_zooms()[:3], args.image
    phantom = generate_phantom(args.seed, PhantomConfig(shape=tuple(args.shape), phase=args.phase))
    img = nib.as_closest_canonical(nib.Nifti1Image(phantom.image, phantom.affine))
    lab = nib.as_closest_canonical(nib.Nifti1Image(phantom.label, phantom.affine))
    title = f"phantom seed {args.seed} {phantom.info['phase']} {phantom.info['orientation']}"
    return np.asarray(img.dataobj), np.asarray(lab.dataobj), img.header.get_zooms()[:3], title


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image")
    parser.add_argument("--label")
    parser.add_argument("--liver-value", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--shape", type=int, nargs=3, default=(512, 512, 160))
    parser.add_argument("--phase", default=None)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    volume, label, zooms, title = _load(args)
    if label is not None and (label >= 1).any():
        centre = np.argwhere(label >= 1).mean(axis=0).astype(int)
    else:
        centre = np.array(volume.shape) // 2
    views = [
        (
            volume[:, :, centre[2]],
            None if label is None else label[:, :, centre[2]],
            zooms[1] / zooms[0],
        ),
        (
            volume[:, centre[1], :],
            None if label is None else label[:, centre[1], :],
            zooms[2] / zooms[0],
        ),
        (
            volume[centre[0], :, :],
            None if label is None else label[centre[0], :, :],
            zooms[2] / zooms[1],
        ),
    ]
    fig, axes = plt.subplots(1, 3, figsize=(15, 5.5))
    for ax, (ct, lab, aspect), name in zip(
        axes, views, ("axial", "coronal", "sagittal"), strict=True
    ):
        # Radiological display of RAS arrays: anterior / superior at the top, the patient's
        # right on the image's left.
        def show(a: np.ndarray, mirror: bool = name != "sagittal") -> np.ndarray:
            return np.flipud(a.T)[:, ::-1] if mirror else np.flipud(a.T)

        ax.imshow(show(ct), cmap="gray", vmin=-100, vmax=400, aspect=aspect)
        if lab is not None:
            ax.contour(show(lab >= 1), levels=[0.5], colors="lime", linewidths=0.7)
            ax.contour(show(lab == 2), levels=[0.5], colors="red", linewidths=0.7)
        ax.set_title(name)
        ax.axis("off")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(args.out, dpi=90)
    print(args.out)


if __name__ == "__main__":
    main()
