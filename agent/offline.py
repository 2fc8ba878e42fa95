"""``edgeserve agent batch``: files in, predictions out, resumable after a kill.

Input rows are cut into chunks of ``chunk_rows``; each chunk runs through the same runtime and
:class:`~edgeserve.agent.serving.batcher.Batcher` as the server (requests of ``max_batch_size``
rows, ``instances`` executions at once) and is written to ``<output>.partial/chunk-NNNNNNNN.*``
atomically (temp file, fsync, ``os.replace``). A rerun skips chunks already written, so a
``kill -9`` costs at most the chunk in flight, and no row is written twice. When every chunk
is there, they are joined into ``<output>`` (again atomically) and the partial directory goes.

Formats (the output uses the input's): ``.npy`` (one input, one output), ``.npz`` (arrays
keyed by input name -> arrays keyed by output name), ``.jsonl`` (one JSON value per line for a
one-input model, or an object keyed by input name -> an object keyed by output name per line).
"""

from __future__ import annotations

import asyncio
import json
import shutil
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from edgeserve.agent.config import AgentConfig
from edgeserve.agent.serving.batcher import Batcher
from edgeserve.agent.serving.loaded import open_runtime
from edgeserve.agent.store import ModelStore

from edgeserve.bundle.manifest import TensorSpec
from edgeserve.errors import ConfigError, InferenceInputError, NotFoundError, StorageError
from edgeserve.fsutil import write_atomic
from edgeserve.runtimes.base import check_feeds

__all__ = ["BatchDone", "run_batch"]

_FORMATS = (".npy", ".npz", ".jsonl")


@dataclass(frozen=True)
class BatchDone:
    """Result of a batch run.

    Attributes:
        rows: rows in the output.
        resumed_rows: rows whose chunks a previous (killed) run had already finished.
    """

    rows: int
    resumed_rows: int


def run_batch(
    config: AgentConfig,
    model: str,
    version: int | None,
    input_path: Path,
    output_path: Path,
    *,
    chunk_rows: int = 1024,
    progress: bool = True,
) -> BatchDone:
    """Run ``model`` over every row of ``input_path`` and write ``output_path``.

    Raises:
        ConfigError: unsupported or mismatched file formats, or a model without a batch axis.
        NotFoundError: the model (version) is not installed.
        InferenceInputError: the input does not fit the model (names the problem).
        StorageError: the disk failed.
    """
    fmt = input_path.suffix.lower()
    if fmt not in _FORMATS:
        raise ConfigError(f"{input_path}: input must be one of {', '.join(_FORMATS)}")
    if output_path.suffix.lower() != fmt:
        raise ConfigError(f"{output_path}: output must use the input's format ({fmt})")
    store = ModelStore(config.state_dir)
    version = version or store.active_version(model)
    if version is None:
        raise NotFoundError(f"model {model!r} is not installed or has no active version")
    bundle = store.bundle(model, version)
    model_cfg = config.model(model)
    runtime = open_runtime(bundle, model_cfg, config.runtime)
    try:
        specs = runtime.inputs
        if not all(s.has_batch_dim for s in (*runtime.inputs, *runtime.outputs)):
            raise ConfigError(f"model {model!r} has no batch dimension; batch mode needs one")
        if fmt == ".npy" and len(runtime.outputs) != 1:
            raise ConfigError(f"model has {len(runtime.outputs)} outputs; use .npz files")
        columns, total = _read_input(input_path, fmt, specs)
        work = output_path.with_name(output_path.name + ".partial")
        plan = {
            "input": str(input_path.resolve()),
            "input_size": input_path.stat().st_size,
            "input_mtime_ns": input_path.stat().st_mtime_ns,
            "model": model,
            "version": version,
            "chunk_rows": chunk_rows,
            "rows": total,
        }
        _prepare(work, plan)
        chunks = [
            (i, start, min(start + chunk_rows, total))
            for i, start in enumerate(range(0, total, chunk_rows))
        ]
        done = {i for i, _, _ in chunks if _chunk_path(work, i, fmt).exists()}
        resumed = sum(end - start for i, start, end in chunks if i in done)
        todo = [c for c in chunks if c[0] not in done]
        with ThreadPoolExecutor(config.runtime.workers, "edgeserve-batch") as executor:
            bar = _progress(progress, total, resumed)
            try:
                asyncio.run(
                    _run_chunks(
                        runtime, executor, model_cfg.batching, specs, columns, todo, work, fmt, bar
                    )
                )
            finally:
                if bar is not None:
                    bar[0].stop()
        _assemble(work, [i for i, _, _ in chunks], fmt, output_path, runtime.outputs)
        shutil.rmtree(work, ignore_errors=True)
    finally:
        runtime.close()
    return BatchDone(total, resumed)


def _read_input(path: Path, fmt: str, specs: tuple[TensorSpec, ...]) -> tuple[dict[str, Any], int]:
    """Columns keyed by input name (arrays, or lists of JSON values) and the row count."""
    try:
        if fmt == ".npy":
            if len(specs) != 1:
                raise ConfigError(f"model has {len(specs)} inputs; use .npz keyed by input name")
            columns: dict[str, Any] = {specs[0].name: np.load(path, mmap_mode="r")}
        elif fmt == ".npz":
            with np.load(path, allow_pickle=False) as data:
                missing = [s.name for s in specs if s.name not in data.files]
                if missing:
                    raise InferenceInputError(f"{path.name}: no array for input(s) {missing}")
                columns = {s.name: data[s.name] for s in specs}
        else:
            columns = {s.name: [] for s in specs}
            with open(path, encoding="utf-8") as fh:
                for lineno, line in enumerate(fh, 1):
                    if not line.strip():
                        continue
                    try:
                        row = json.loads(line)
                    except ValueError as exc:
                        raise InferenceInputError(
                            f"{path.name}:{lineno}: bad JSON: {exc}"
                        ) from None
                    if len(specs) == 1 and not isinstance(row, dict):
                        row = {specs[0].name: row}
                    if not isinstance(row, dict) or set(row) != set(columns):
                        raise InferenceInputError(
                            f"{path.name}:{lineno}: expected an object with {sorted(columns)}"
                        )
                    for name, value in row.items():
                        columns[name].append(value)
    except (OSError, ValueError) as exc:
        raise InferenceInputError(f"{path}: cannot read input: {exc}") from exc
    lengths = {len(c) for c in columns.values()}
    if len(lengths) != 1:
        raise InferenceInputError(f"{path.name}: inputs have different row counts {lengths}")
    return columns, lengths.pop()


def _rows(columns: dict[str, Any], specs: tuple[TensorSpec, ...], start: int, end: int) -> dict:
    from edgeserve.datatypes import to_numpy

    feeds = {}
    for spec in specs:
        col = columns[spec.name]
        if isinstance(col, list):
            try:
                feeds[spec.name] = np.asarray(col[start:end], dtype=to_numpy(spec.datatype))
            except (ValueError, TypeError, OverflowError) as exc:
                raise InferenceInputError(
                    f"rows {start}-{end - 1}: input {spec.name} does not fit {spec.datatype}: {exc}"
                ) from None
        else:
            feeds[spec.name] = np.ascontiguousarray(col[start:end])
    check_feeds(specs, feeds)
    return feeds


async def _run_chunks(
    runtime: Any,
    executor: Any,
    cfg: Any,
    specs: tuple[TensorSpec, ...],
    columns: dict[str, Any],
    todo: list[tuple[int, int, int]],
    work: Path,
    fmt: str,
    bar: Any,
) -> None:
    batcher = Batcher(
        runtime.run,
        executor,
        batching=cfg.enabled,
        max_batch_size=cfg.max_batch_size,
        max_queue_delay_us=0,
        max_queue_size=1 << 30,
        timeout_ms=max(cfg.timeout_ms, 3_600_000),
        instances=cfg.instances,
    )
    step = cfg.max_batch_size
    loop = asyncio.get_running_loop()
    for index, start, end in todo:
        parts = [(s, min(s + step, end)) for s in range(start, end, step)]
        results = await asyncio.gather(
            *(batcher.submit(_rows(columns, specs, s, e), e - s) for s, e in parts)
        )
        outputs = {
            name: np.concatenate([r.outputs[name] for r in results], axis=0)
            for name in results[0].outputs
        }
        await loop.run_in_executor(None, _write_chunk, work, index, fmt, outputs)
        if bar is not None:
            bar[0].advance(bar[1], end - start)


def _prepare(work: Path, plan: dict[str, Any]) -> None:
    plan_path = work / "plan.json"
    try:
        if work.is_dir():
            try:
                old = json.loads(plan_path.read_text())
            except (OSError, ValueError):
                old = None
            if old == plan:
                return
            shutil.rmtree(work)  # another input, model or chunking: earlier chunks do not apply
        work.mkdir(parents=True)
        write_atomic(plan_path, json.dumps(plan, sort_keys=True).encode())
    except OSError as exc:
        raise StorageError(f"cannot prepare {work}: {exc.strerror or exc}") from exc


def _chunk_path(work: Path, index: int, fmt: str) -> Path:
    return work / f"chunk-{index:08d}{'.jsonl' if fmt == '.jsonl' else '.npz'}"


def _write_chunk(work: Path, index: int, fmt: str, outputs: dict[str, np.ndarray]) -> None:
    if fmt == ".jsonl":
        single = len(outputs) == 1
        rows = next(iter(outputs.values())).shape[0]
        lines = []
        for i in range(rows):
            value = (
                next(iter(outputs.values()))[i].tolist()
                if single
                else {n: a[i].tolist() for n, a in outputs.items()}
            )
            lines.append(json.dumps(value, separators=(",", ":")))
        data = ("\n".join(lines) + "\n").encode()
        write_atomic(_chunk_path(work, index, fmt), data)
        return
    import io

    buf = io.BytesIO()
    np.savez(buf, **outputs)
    write_atomic(_chunk_path(work, index, fmt), buf.getvalue())


def _assemble(
    work: Path, indexes: list[int], fmt: str, output: Path, specs: tuple[TensorSpec, ...]
) -> None:
    try:
        if fmt == ".jsonl":
            data = b"".join(_chunk_path(work, i, fmt).read_bytes() for i in indexes)
            write_atomic(output, data)
            return
        parts: dict[str, list[np.ndarray]] = {}
        for i in indexes:
            with np.load(_chunk_path(work, i, fmt), allow_pickle=False) as chunk:
                for name in chunk.files:
                    parts.setdefault(name, []).append(chunk[name])
        if not parts:  # empty input
            parts = {s.name: [np.zeros((0,), np.float32)] for s in specs}
        arrays = {n: np.concatenate(a, axis=0) for n, a in parts.items()}
        import io

        buf = io.BytesIO()
        if fmt == ".npy":
            if len(arrays) != 1:
                raise ConfigError("model has several outputs; use .npz files")
            np.save(buf, next(iter(arrays.values())))
        else:
            np.savez(buf, **arrays)
        write_atomic(output, buf.getvalue())
    except OSError as exc:
        raise StorageError(f"cannot write {output}: {exc.strerror or exc}") from exc


def _progress(enabled: bool, total: int, done: int) -> Any:
    if not enabled:
        return None
    from rich.progress import Progress

    bar = Progress(transient=False)
    task = bar.add_task("batch", total=total, completed=done)
    bar.start()
    return bar, task
