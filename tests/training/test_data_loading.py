"""The training data path of train.yaml: what the cache keeps, and that the crops stay the same.

train.yaml lists each case's crop-centre candidates once (cached) instead of letting
RandCropByLabelClassesd list them from the whole volume at every draw, keeps the label in
uint8, and hands cached cases to the random transforms without a deep copy. None of it
may change what training sees: the reference below is the same transform list computing
the candidates at every draw from the float32 label, as train.yaml did before.
"""

from __future__ import annotations

import copy

import pytest
import torch
from bundle_files import TRAIN_QUICK, bundle_workflow
from monai.transforms import CastToTyped, Compose, RandAffined, RandCropByLabelClassesd

from pipeline.transforms.sampling import ClassIndicesd, class_indices


@pytest.fixture(scope="module")
def quick_parser(tmp_path_factory):
    """train.yaml with quick.yaml (4 synthetic cases), crops smaller than the volumes."""
    tmp = tmp_path_factory.mktemp("data_loading")
    workflow = bundle_workflow(
        TRAIN_QUICK,
        "training",
        output_dir=str(tmp / "run"),
        ckpt_dir=str(tmp / "run" / "models"),
        synthetic_dir=str(tmp / "synthetic"),
        roi_size=[16, 16, 16],
    )
    return workflow.parser


def _per_draw_reference(transforms: list) -> list:
    """``transforms`` as before the cache held the candidates: listed by the crop each draw."""
    reference = []
    for transform in copy.deepcopy(transforms):
        if isinstance(transform, (ClassIndicesd, CastToTyped)):
            continue
        if isinstance(transform, RandCropByLabelClassesd):
            transform.indices_key = None
        reference.append(transform)
    return reference


def test_the_cache_holds_the_uint8_label_and_its_crop_centre_candidates(quick_parser):
    dataset = quick_parser.get_parsed_content("train#dataset")
    for cached in dataset._cache:
        assert cached["label"].dtype == torch.uint8
        expected = class_indices(cached["label"], num_classes=3)
        listed = cached["label_cls_indices"]
        assert [i.tolist() for i in listed] == [e.tolist() for e in expected]


def test_training_crops_are_those_drawn_by_scanning_the_label_at_every_draw(quick_parser):
    transforms = quick_parser.get_parsed_content("train#preprocessing").transforms
    current = Compose(copy.deepcopy(list(transforms)))
    reference = Compose(_per_draw_reference(list(transforms)))
    for pipeline in (current, reference):
        for transform in pipeline.transforms:
            if isinstance(transform, RandAffined):
                transform.prob = transform.rand_affine.prob = 1.0  # every crop resampled
        pipeline.set_random_state(seed=11)
    cases = quick_parser.get_parsed_content("datalist")["training"]
    compared = 0
    for _ in range(3):
        for case in cases:
            for ours, theirs in zip(current(dict(case)), reference(dict(case)), strict=True):
                assert ours["label"].dtype == theirs["label"].dtype == torch.float32
                assert torch.equal(ours["image"], theirs["image"])
                assert torch.equal(ours["label"], theirs["label"])
                compared += 1
    assert compared == 3 * len(cases) * quick_parser.get_parsed_content("num_samples")


def test_cache_grid_resamples_as_a_new_grid_each_time():
    image = torch.rand(1, 12, 10, 8)
    label = (torch.rand(1, 12, 10, 8) * 3).floor()
    outputs = []
    for options in ({}, {"spatial_size": [12, 10, 8], "cache_grid": True}):
        affine = RandAffined(
            ["image", "label"],
            prob=1.0,
            rotate_range=[0.15] * 3,
            scale_range=[0.1] * 3,
            mode=["bilinear", "nearest"],
            padding_mode="border",
            **options,
        )
        affine.set_random_state(5)
        outputs.append([affine({"image": image, "label": label}) for _ in range(3)])
    for ours, theirs in zip(*outputs, strict=True):
        assert torch.equal(ours["image"], theirs["image"])
        assert torch.equal(ours["label"], theirs["label"])


def test_training_leaves_the_cached_cases_unchanged(quick_parser):
    # copy_cache is off: a transform writing into its input would corrupt the cache.
    dataset = quick_parser.get_parsed_content("train#dataset")
    before = copy.deepcopy(dataset._cache)
    loader = quick_parser.get_parsed_content("train#dataloader")
    for _ in range(2):
        for batch in loader:
            batch["image"].add_(1.0)  # what the network step could do to its inputs
    for cached, kept in zip(dataset._cache, before, strict=True):
        assert set(cached) == set(kept)
        for key in ("image", "label"):
            assert torch.equal(cached[key], kept[key])
            assert len(cached[key].applied_operations) == len(kept[key].applied_operations)
        assert [i.tolist() for i in cached["label_cls_indices"]] == [
            i.tolist() for i in kept["label_cls_indices"]
        ]
