"""Segment every scan of a folder on an Ignite engine, surviving bad scans.

One engine iteration is one scan: predict, save the mask beside its quantification, and
record the stage times. A scan that fails (unreadable, truncated, 2D, 4D, NaN, broken
spacing, empty DICOM folder...) is written to ``failures.csv`` with its reason and the run
goes on. Every file is written atomically (temporary name, then rename), so a stopped run
leaves no half-written mask, and a re-run skips the finished cases unless ``overwrite``,
or unless a case was made with another checkpoint (SHA-256) or other settings: such a
case is redone, and the run says how many and why (``redone`` in run.json).

Outputs in ``output_dir``:

* the mask, uint8 labels on the scan's grid, in the ``output_format`` asked for:
  ``nifti`` (default) ``<case>_seg.nii.gz`` (a NIfTI scan's own header); ``dicom_seg``
  ``<case>_seg.dcm``, a DICOM Segmentation of a DICOM series input (``dicom_seg.py``);
  ``both`` the NIfTI, and the DICOM-SEG too for a DICOM series; ``native`` the input's
  own format (NIfTI, ``.nrrd`` for NRRD, ``.mha`` for MetaImage, DICOM-SEG for a series).
  A format the input cannot have (DICOM-SEG of a NIfTI file) fails that case, named in
  ``failures.csv``, before any work;
* ``<case>.json``: quantification, stage times, checkpoint SHA-256, settings, warnings, notes,
  and the quality-control verdict (``qc``: pass / warn / fail with reasons, ``quality.py``;
  a ``fail`` scan is not segmented and is listed in failures.csv);
* ``quantification.csv``: one row per segmented case, with its ``qc`` verdict and reasons;
* ``timings.csv``: seconds per stage and case; ``failures.csv``: case, input, error;
* ``warnings.csv``: case, input, warning (a cascade that found no liver, or a liver cut
  by the scan's edge: the mask is written, but look at it);
* ``run.json``: what was run, on what, with which checkpoint, and the counts; the inputs
  left out and why (label maps of a data set's layout, masks, other files, the run's own
  output folder when it sits inside the input folder: nothing is dropped unsaid).

Under torchrun (``torchrun --nproc_per_node=N -m monai.bundle run inference ...``, the same
configs and arguments) the processes share the scans (``sharding.py``): rank 0 lists the
input and deals the scans, largest first, so that every rank gets about as many bytes;
each rank segments its share (on ``cuda:LOCAL_RANK``, or the CPU), every case JSON
records the ``rank`` that made it, and rank 0 writes the tables above for the whole
folder (timings.csv with a ``rank`` column, run.json with ``world_size`` and, per rank,
its host, cases, counts and seconds) and prints the summary. The ranks send their counts
and case records to rank 0 through the process group, so the tables are whole even when
the nodes do not share ``output_dir`` (each node then keeps the masks it made).

While the network segments one scan, a background thread reads the next
(``prefetch.py``; ``prefetch`` in inference.yaml): ``load`` in timings.csv is the read's
own time, ``load_wait`` how long the run waited for it. The tables and run.json are
written by ``run_tables.py``.

A run first deletes the temporary files a killed run left in ``output_dir`` (older than
the run). On a full disk (ENOSPC) the run (under torchrun, the rank that met it) stops at
that case, writes what tables it can, and ends with one line naming ENOSPC; the cases not
reached are ``not_run`` in run.json.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import socket
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from ignite.engine import Engine, Events
from tqdm.auto import tqdm

from pipeline import __version__
from pipeline.inference.outputs import OUTPUT_FORMATS, output_paths, save_masks
from pipeline.inference.predictor import ScanPredictor
from pipeline.inference.prefetch import ScanPrefetcher
from pipeline.inference.quantify import quantify
from pipeline.inference.run_tables import RunSummary, print_summary, write_run_tables
from pipeline.inference.scans import (
    InvalidScanError,
    LeftOut,
    Scan,
    check_unique_cases,
    list_scans,
)
from pipeline.inference.sharding import shard_scans, torchrun_world
from pipeline.io import checkpoint_identity, json_safe, save_probability_map, write_json
from pipeline.labels import TUMOUR
from pipeline.names import TUMOUR_PROBABILITY_SUFFIX

logger = logging.getLogger(__name__)


class FolderRun:
    """Segment the scans of ``input_path`` into ``output_dir``.

    The one segment-and-save loop of the project: ``run inference`` runs it on a folder,
    evaluation, post-processing tuning and the sweep on the scans of a split.

    Args:
        predictor: the configured one-scan pipeline.
        input_path: folder, NIfTI file, DICOM series folder or datalist JSON; or the
            scans themselves (e.g. :func:`~pipeline.inference.scans.scans_from_records`).
        output_dir: where masks and tables go (created).
        checkpoint: the weights' file (or files, for an ensemble), recorded with its
            SHA-256 (several joined by ``+``).
        settings: the configuration worth recording with every case (JSON-able).
        overwrite: redo cases whose mask and JSON already exist.
        save_probabilities: also write the tumour probability on the scan's grid,
            ``<case>_tumour_prob.nii.gz`` (uint8 with slope 1/255); evaluation then
            computes the tumour ROC-AUC from it.
        progress: show a progress bar.
        output_format: ``nifti``, ``dicom_seg``, ``both`` or ``native`` (module docstring).
        prefetch: read the next scan in a background thread while the current one is
            segmented (``prefetch.py``); only for predictors with a ``load`` method.
    """

    def __init__(
        self,
        predictor: ScanPredictor,
        input_path: str | os.PathLike | Sequence[Scan],
        output_dir: str | os.PathLike,
        checkpoint: str | os.PathLike | Sequence[str | os.PathLike] | None = None,
        settings: dict[str, Any] | None = None,
        overwrite: bool = False,
        save_probabilities: bool = False,
        progress: bool = True,
        output_format: str = "nifti",
        prefetch: bool = True,
    ) -> None:
        if output_format not in OUTPUT_FORMATS:
            raise ValueError(
                f"output_format must be one of {', '.join(OUTPUT_FORMATS)}, got {output_format!r}"
            )
        if not input_path:
            raise ValueError("no input: pass --input_dir FOLDER (NIfTI files or DICOM series)")
        if not output_dir:
            raise ValueError("no output folder: pass --output_dir FOLDER")
        self.predictor = predictor
        if isinstance(input_path, (str, os.PathLike)):
            self.input_path: Path | None = Path(input_path)
            self.scans: list[Scan] | None = None
        else:
            check_unique_cases(input_path)
            self.input_path, self.scans = None, list(input_path)
        self.output_dir = Path(output_dir)
        # One file, or several (a fold ensemble): named and hashed together.
        self.checkpoint, _ = checkpoint_identity(checkpoint)
        self._checkpoint_source = checkpoint
        self.settings = settings or {}
        self.overwrite = bool(overwrite)
        self.save_probabilities = bool(save_probabilities)
        self.progress = progress
        self.output_format = output_format
        self._checkpoint_sha256: str | None = None
        self.prefetch = bool(prefetch) and callable(getattr(predictor, "load", None))
        self._reader: ScanPrefetcher | None = None
        self._rank = (0, 1)  # (rank, world size) of this process in the run

    # ---- one scan -------------------------------------------------------------------------
    def _finished(self, scan: Scan) -> bool:
        try:
            outputs = output_paths(self.output_dir, scan, self.output_format)
        except InvalidScanError:
            return False  # segmented in no format: it fails again, and is listed
        if self.save_probabilities:  # a run without them left none: the case is redone
            outputs["tumour_probability"] = self.output_dir / (
                scan.case + TUMOUR_PROBABILITY_SUFFIX
            )
        return all(path.exists() for path in outputs.values()) and (
            (self.output_dir / f"{scan.case}.json").exists()
        )

    def _stale(self, scan: Scan) -> str | None:
        """Why a finished case must be redone: another checkpoint or other settings."""
        try:
            record = json.loads((self.output_dir / f"{scan.case}.json").read_text())
        except (OSError, ValueError):
            return "its JSON is unreadable"
        if record.get("checkpoint_sha256") != self._checkpoint_sha256:
            return "the checkpoint changed (SHA-256)"
        # Compared as JSON, the form the record was written in.
        if json.dumps(json_safe(record.get("settings")), sort_keys=True) != json.dumps(
            json_safe(self.settings), sort_keys=True
        ):
            return "the settings changed"
        return None

    def _segment(self, scan: Scan) -> dict[str, Any]:
        start = time.perf_counter()
        outputs = output_paths(self.output_dir, scan, self.output_format)  # fails early
        if self._reader is not None:
            loaded = self._reader.get(scan)
            waited = time.perf_counter() - start
            prediction = self.predictor.predict(scan, loaded)
            prediction.seconds["load_wait"] = waited
        else:
            prediction = self.predictor.predict(scan)
        seconds = prediction.seconds
        quantify_start = time.perf_counter()
        quantification = quantify(prediction.labels, prediction.affine)
        seconds["quantify"] = time.perf_counter() - quantify_start
        save_start = time.perf_counter()
        prediction.warnings.extend(save_masks(scan, prediction, outputs, self._checkpoint_sha256))
        out = next(iter(outputs.values()))
        if prediction.probabilities is not None:
            outputs["tumour_probability"] = save_probability_map(
                prediction.probabilities[TUMOUR],
                prediction.affine,
                self.output_dir / f"{scan.case}{TUMOUR_PROBABILITY_SUFFIX}",
            )
        seconds["save"] = time.perf_counter() - save_start
        seconds["total"] = time.perf_counter() - start
        record = {
            "case": scan.case,
            "input": str(scan.path),
            "input_kind": scan.kind,
            "mask": str(out),
            "outputs": {writer: str(path) for writer, path in outputs.items()},
            "shape": list(prediction.labels.shape),
            "affine": np.round(prediction.affine, 6).tolist(),
            "quantification": quantification,
            "seconds": {k: round(v, 4) for k, v in seconds.items()},
            "checkpoint": self.checkpoint,
            "checkpoint_sha256": self._checkpoint_sha256,
            "settings": self.settings,
            "warnings": list(prediction.warnings),
            "notes": list(prediction.notes),
            "qc": prediction.quality.to_dict(),
            "rank": self._rank[0],
            "world_size": self._rank[1],
            "pipeline_version": __version__,
        }
        # The JSON goes last: its presence marks the case as finished.
        write_json(record, self.output_dir / f"{scan.case}.json")
        return record

    @staticmethod
    def _failed(state: Any, scan: Scan, err: BaseException) -> dict[str, Any]:
        message = f"{type(err).__name__}: {err}".replace("\n", " ")
        logger.error("%s failed: %s", scan.path, message)
        state.summary.failed.append({"case": scan.case, "input": str(scan.path), "error": message})
        return {"case": scan.case, "status": "failed"}

    def _remove_stale_temporaries(self, started: float) -> list[str]:
        """Delete temporary files that a killed run left (older than this run)."""
        removed = []
        for path in self.output_dir.glob(".*.tmp*"):
            try:
                if path.is_file() and path.stat().st_mtime < started:
                    path.unlink()
                    removed.append(path.name)
            except OSError:  # gone meanwhile, or not ours to delete: not this run's concern
                continue
        return removed

    def _work_needed(self, scan: Scan) -> str | None:
        """Why ``scan`` is to be segmented, or None when it is done already.

        "new", "overwrite", or why a finished result is stale; None when a finished result
        of this checkpoint and these settings exists.
        """
        if self.overwrite:
            return "overwrite"
        if not self._finished(scan):
            return "new"
        # A mask of another model or other settings must not pass for this run's.
        return self._stale(scan)

    def _process(self, engine: Engine, scan: Scan) -> dict[str, Any]:
        state = engine.state
        reason = self._work_needed(scan)
        if reason is None:
            state.summary.skipped.append(scan.case)
            return {"case": scan.case, "status": "skipped"}
        if reason not in ("new", "overwrite"):
            state.summary.redone.append({"case": scan.case, "reason": reason})
        try:
            record = self._segment(scan)
        except OSError as err:
            if err.errno != errno.ENOSPC:
                return self._failed(state, scan, err)
            # A full disk fails every later case too: stop, keep what is done.
            state.summary.disk_full = f"{scan.path}: {err}"
            self._failed(state, scan, err)
            engine.terminate()
            return {"case": scan.case, "status": "failed"}
        except Exception as err:  # one bad scan must not end the run: record and go on
            return self._failed(state, scan, err)
        state.summary.done.append(scan.case)
        logger.info(
            "%s: liver %.0f mL, %d tumour(s), %.1f s",
            scan.case,
            record["quantification"]["liver_volume_ml"],
            record["quantification"]["n_tumours"],
            record["seconds"]["total"],
        )
        return {"case": scan.case, "status": "done"}

    # ---- the run ----------------------------------------------------------------------------
    def run(self, distributed: bool = False) -> RunSummary:
        """Segment every scan, then write the tables; returns the counts.

        Args:
            distributed: share the scans among the processes torchrun started
                (``WORLD_SIZE`` > 1; every one of them must call this). Each segments its
                share (:mod:`~pipeline.inference.sharding`), rank 0 writes the tables of the
                whole run, and every process returns the whole run's summary. False, or
                without torchrun, this process segments every scan.
        """
        started = time.time()
        with torchrun_world(enabled=distributed) as world:

            def listing() -> tuple[list[Scan], list[LeftOut], list[list[Scan]]]:
                if self.scans is not None:
                    scans, left_out = self.scans, []
                else:  # the output folder may sit inside the input folder: never read it back
                    scans, left_out = list_scans(self.input_path, exclude=[self.output_dir])
                # One process keeps the listed order; several get a balanced deal.
                shards = shard_scans(scans, world.world_size) if world.distributed else [scans]
                return scans, left_out, shards

            scans, left_out, shards = world.from_rank0(listing)
            mine = shards[world.rank]
            self.output_dir.mkdir(parents=True, exist_ok=True)
            stale = self._remove_stale_temporaries(started)
            # In a shared output folder no rank may delete another's work in progress: none
            # writes a temporary file of this run before every rank has cleaned up.
            world.barrier()
            self._checkpoint_sha256 = checkpoint_identity(self._checkpoint_source)[1]
            shard_start = time.perf_counter()
            engine = Engine(self._process)
            engine.state.summary = RunSummary(self.output_dir, stale_removed=stale)

            self._rank = (world.rank, world.world_size)
            if self.prefetch and mine:
                self._reader = ScanPrefetcher(
                    self.predictor.load, mine, lambda scan: self._work_needed(scan) is not None
                )
            if self.progress and mine:
                bar = tqdm(
                    total=len(mine),
                    desc=f"inference rank {world.rank}" if world.distributed else "inference",
                    unit="scan",
                    position=world.local_rank if world.distributed else None,  # a bar per GPU
                )
                engine.add_event_handler(Events.ITERATION_COMPLETED, lambda _: bar.update(1))
                engine.add_event_handler(Events.COMPLETED, lambda _: bar.close())
            try:
                if mine:  # more ranks than scans leaves some with none
                    engine.run(mine, max_epochs=1, epoch_length=len(mine))
            finally:
                if self._reader is not None:
                    self._reader.close()
                    self._reader = None
            own: RunSummary = engine.state.summary
            failed = {f["case"] for f in own.failed}
            records = []
            for scan in mine:  # finished earlier or now: the tables cover the whole folder
                path = self.output_dir / f"{scan.case}.json"
                if scan.case not in failed and path.exists():
                    records.append(json.loads(path.read_text()))
            # Through the process group, not the output folder: nodes need not share it.
            shares = world.all_gather(
                {
                    "rank": world.rank,
                    "host": socket.gethostname(),
                    "cases": [scan.case for scan in mine],
                    "seconds": round(time.perf_counter() - shard_start, 3),
                    "summary": own,
                    "records": records,
                }
            )
        summary, records = RunSummary.merged(
            self.output_dir, shares, scans, left_out, rank=world.rank
        )
        if summary.rank == 0:  # one writer of the shared tables
            run_info = {
                "input": str(self.input_path) if self.input_path else f"{len(scans)} listed scans",
                "output_dir": str(self.output_dir),
                "checkpoint": self.checkpoint,
                "checkpoint_sha256": self._checkpoint_sha256,
                "settings": self.settings,
                "output_format": self.output_format,
            }
            write_run_tables(self.output_dir, scans, summary, records, run_info)
        return summary

    def __call__(self) -> RunSummary:
        """Run, print where the results are, and exit non-zero when a scan failed.

        This is what ``python -m monai.bundle run inference`` executes. Under torchrun the
        processes share the scans (``run(distributed=True)``); rank 0 alone prints the whole
        run's summary and exits non-zero for it, the others return quietly.
        """
        summary = self.run(distributed=True)
        if summary.rank != 0:
            return summary
        print_summary(summary, self.output_dir)
        if summary.disk_full:
            raise SystemExit(
                f"inference stopped, no space left on device (ENOSPC): {summary.disk_full}; "
                f"{len(summary.done)} segmented before it, what could be written is in "
                f"{self.output_dir}"
            )
        if summary.failed:
            raise SystemExit(
                f"{len(summary.failed)} scan(s) failed; see {self.output_dir / 'failures.csv'}"
            )
        return summary
