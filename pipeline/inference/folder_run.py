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
* ``<case>.json``: quantification, stage times, checkpoint SHA-256, settings, warnings,
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

A run first deletes the temporary files a killed run left in ``output_dir`` (older than
the run). On a full disk (ENOSPC) the run (under torchrun, the rank that met it) stops at
that case, writes what tables it can, and ends with one line naming ENOSPC; the cases not
reached are ``not_run`` in run.json.
"""

from __future__ import annotations

import csv
import errno
import json
import logging
import os
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from ignite.engine import Engine, Events
from tqdm.auto import tqdm

from pipeline import __version__
from pipeline.inference.outputs import OUTPUT_FORMATS, output_paths, save_masks
from pipeline.inference.predictor import STAGES, ScanPredictor
from pipeline.inference.prefetch import ScanPrefetcher
from pipeline.inference.quantify import QUANTIFICATION_COLUMNS, quantification_row, quantify
from pipeline.inference.scans import (
    InvalidScanError,
    LeftOut,
    Scan,
    check_unique_cases,
    list_scans,
)
from pipeline.inference.sharding import shard_scans, torchrun_world
from pipeline.io import atomic_path, checkpoint_identity, json_safe, save_nifti, write_json

logger = logging.getLogger(__name__)

# "locate": the whole first stage of a cascade (empty for a single-stage model).
# "load_wait": how long the run waited for the scan's read (the read itself, "load", runs
# in the background while the previous scan is segmented; see prefetch.py).
TIMING_COLUMNS = ("case", "locate", *STAGES, "load_wait", "quantify", "save", "total")
FAILURE_COLUMNS = ("case", "input", "error")
WARNING_COLUMNS = ("case", "input", "warning")
QC_COLUMNS = ("qc", "qc_reasons")
_SHOWN_LEFT_OUT = 10  # printed at the end of a run; run.json lists them all


@dataclass
class RunSummary:
    """Counts of a folder run and where its tables are."""

    output_dir: Path
    done: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    redone: list[dict[str, str]] = field(default_factory=list)  # finished, but stale
    failed: list[dict[str, str]] = field(default_factory=list)
    warned: list[dict[str, str]] = field(default_factory=list)
    flagged: list[dict[str, str]] = field(default_factory=list)
    left_out: list[LeftOut] = field(default_factory=list)
    disk_full: str | None = None  # the write that found no space left; the run stopped there
    stale_removed: list[str] = field(default_factory=list)
    rank: int = 0  # the process this summary was returned to (rank 0 writes the tables)
    world_size: int = 1  # processes that shared the run (torchrun)
    # Per process: rank, host, seconds, done / skipped / failed counts, the cases dealt to it.
    ranks: list[dict[str, Any]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when no scan failed."""
        return not self.failed

    @classmethod
    def merged(
        cls,
        output_dir: Path,
        shares: list[dict[str, Any]],
        scans: list[Scan],
        left_out: list[LeftOut],
        rank: int = 0,
    ) -> tuple[RunSummary, list[dict[str, Any]]]:
        """The whole run from the share of every process (one share when alone).

        Args:
            output_dir: the run's output folder.
            shares: per process, in rank order: ``rank``, ``host``, ``seconds``, ``cases``
                (the names dealt to it), ``summary`` (its own counts) and ``records`` (the
                case JSONs of its finished cases).
            scans: every scan of the run; lists and records follow this order.
            left_out: the inputs the listing left out.
            rank: the process the summary is returned to.

        Returns:
            The merged summary, and every finished case's record in the order of ``scans``.
        """
        order = {scan.case: i for i, scan in enumerate(scans)}

        def in_order(items: Any, case: Callable[[Any], str] = str) -> list[Any]:
            return sorted(items, key=lambda item: order.get(case(item), len(order)))

        parts: list[RunSummary] = [share["summary"] for share in shares]
        records = in_order((r for share in shares for r in share["records"]), lambda r: r["case"])
        return cls(
            output_dir,
            done=in_order(case for part in parts for case in part.done),
            skipped=in_order(case for part in parts for case in part.skipped),
            redone=in_order((r for p in parts for r in p.redone), lambda r: r["case"]),
            failed=in_order((f for p in parts for f in p.failed), lambda f: f["case"]),
            warned=[
                {"case": r["case"], "input": r["input"], "warning": warning}
                for r in records
                for warning in r.get("warnings", [])
            ],
            flagged=[
                {"case": r["case"], "input": r["input"], "reasons": _qc_columns(r)["qc_reasons"]}
                for r in records
                if _qc_columns(r)["qc"] == "warn"
            ],
            left_out=left_out,
            disk_full=next((part.disk_full for part in parts if part.disk_full), None),
            stale_removed=sorted({name for part in parts for name in part.stale_removed}),
            rank=rank,
            world_size=len(shares),
            ranks=[
                {
                    "rank": share["rank"],
                    "host": share["host"],
                    "seconds": share["seconds"],
                    "done": len(part.done),
                    "skipped": len(part.skipped),
                    "failed": len(part.failed),
                    "cases": share["cases"],
                }
                for share, part in zip(shares, parts, strict=True)
            ],
        ), records


def _qc_columns(record: dict[str, Any]) -> dict[str, str]:
    """The ``qc`` and ``qc_reasons`` cells of a case JSON (older JSONs have no verdict)."""
    qc = record.get("qc") or {}
    return {"qc": qc.get("verdict", ""), "qc_reasons": " | ".join(qc.get("reasons", []))}


def _write_csv(path: Path, columns: tuple[str, ...], rows: list[dict[str, Any]]) -> None:
    with atomic_path(path, suffix=".csv") as tmp:
        with open(tmp, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=columns, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(rows)


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
        save_probabilities: also write ``<case>_prob.nii.gz`` (X, Y, Z, 3 float32).
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
            save_nifti(
                np.moveaxis(prediction.probabilities, 0, -1).astype(np.float32),
                prediction.affine,
                self.output_dir / f"{scan.case}_prob.nii.gz",
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
            self._write_tables(scans, summary, records)
        return summary

    def _write_table(self, summary: RunSummary, write: Callable[[], Any]) -> None:
        """Write one table; on a full disk note it and go on with the next (smaller) ones."""
        try:
            write()
        except OSError as err:
            if err.errno != errno.ENOSPC:
                raise
            summary.disk_full = summary.disk_full or str(err)

    def _write_tables(
        self, scans: list[Scan], summary: RunSummary, records: list[dict[str, Any]]
    ) -> None:
        """Write the run's tables and run.json.

        Args:
            scans: every scan of the run, in the order the tables list them.
            summary: the whole run's counts (every rank's, merged).
            records: the case JSONs of the finished cases (done now or earlier).
        """
        finished = {r["case"] for r in records} | {f["case"] for f in summary.failed}
        not_run = [scan.case for scan in scans if scan.case not in finished]
        tables = {
            "failures.csv": (FAILURE_COLUMNS, summary.failed),
            "quantification.csv": (
                (*QUANTIFICATION_COLUMNS, *QC_COLUMNS),
                [
                    {**quantification_row(r["case"], r["quantification"]), **_qc_columns(r)}
                    for r in records
                ],
            ),
            # rank: the process that made the case (0 when one process did; see run.json)
            "timings.csv": (
                (*TIMING_COLUMNS, "rank"),
                [{"case": r["case"], **r["seconds"], "rank": r.get("rank", 0)} for r in records],
            ),
            "warnings.csv": (WARNING_COLUMNS, summary.warned),
        }
        for name, (columns, rows) in tables.items():
            self._write_table(
                summary, lambda n=name, c=columns, r=rows: _write_csv(self.output_dir / n, c, r)
            )
        run = {
            "input": str(self.input_path) if self.input_path else f"{len(scans)} listed scans",
            "output_dir": str(self.output_dir),
            "checkpoint": self.checkpoint,
            "checkpoint_sha256": self._checkpoint_sha256,
            "settings": self.settings,
            "output_format": self.output_format,
            "n_scans": len(scans),
            "done": summary.done,
            "skipped": summary.skipped,
            "redone": summary.redone,
            "failed": summary.failed,
            "not_run": not_run,
            "disk_full": summary.disk_full,
            "left_out": [{"input": str(x.path), "reason": x.reason} for x in summary.left_out],
            "stale_temporary_files_removed": summary.stale_removed,
            "warnings": summary.warned,
            "qc": {
                verdict: sorted(r["case"] for r in records if _qc_columns(r)["qc"] == verdict)
                for verdict in ("pass", "warn")
            },
            "world_size": summary.world_size,
            "ranks": summary.ranks,
            "pipeline_version": __version__,
        }
        self._write_table(summary, lambda: write_json(run, self.output_dir / "run.json"))

    def __call__(self) -> RunSummary:
        """Run, print where the results are, and exit non-zero when a scan failed.

        This is what ``python -m monai.bundle run inference`` executes. Under torchrun the
        processes share the scans (``run(distributed=True)``); rank 0 alone prints the whole
        run's summary and exits non-zero for it, the others return quietly.
        """
        summary = self.run(distributed=True)
        if summary.rank != 0:
            return summary
        print(
            f"inference: {len(summary.done)} segmented, {len(summary.skipped)} already done, "
            f"{len(summary.failed)} failed -> {self.output_dir}"
        )
        if summary.world_size > 1:
            shares = ", ".join(
                f"rank {r['rank']} on {r['host']}: {len(r['cases'])} scan(s), {r['seconds']:.0f} s"
                for r in summary.ranks
            )
            print(f"  shared by {summary.world_size} processes: {shares}")
        if summary.redone:
            reasons = sorted({r["reason"] for r in summary.redone})
            print(f"  {len(summary.redone)} finished case(s) redone: {'; '.join(reasons)}")
        for left in summary.left_out[:_SHOWN_LEFT_OUT]:
            print(f"  left out {left.path}: {left.reason}")
        if len(summary.left_out) > _SHOWN_LEFT_OUT:
            print(f"  ... {len(summary.left_out)} files left out in all: see run.json")
        for warned in summary.warned:
            print(f"  WARNING {warned['input']}: {warned['warning']}")
        for flagged in summary.flagged:
            print(f"  QC WARN {flagged['input']}: {flagged['reasons']}")
        if summary.failed:
            for failure in summary.failed:
                print(f"  FAILED {failure['input']}: {failure['error']}")
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
