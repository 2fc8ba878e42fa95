"""A canary that goes wrong: v2 is broken on purpose, the fleet rolls it back by itself.

    python examples/canary-rollback/run.py [WORK_DIR]

Sets up what `edgeserve quickstart` sets up (digits model, broker, fleet server, three agents,
v1 everywhere; every step through the real CLI), then releases a v2 whose bundle carries the
wrong model file: a diverged checkpoint with a NaN in its weights, swapped in after the
converter validated the good one (a packaging mistake no offline check sees). The release is
signed and uploaded, and a staged rollout starts with a zero-failure gate: the canary (10% of
the devices) installs v2, runs the bundle's sample inputs as its health check, sees non-finite
outputs and goes back to v1; the server's failure gate trips, pauses the rollout and sets every
affected device back to the baseline; the other devices never get v2.
The script prints the rollout status and its audit log, and checks that every agent still
answers with v1.
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnx
from edgeserve.quickstart.procs import StepFailed
from edgeserve.quickstart.scenario import MODEL, Quickstart, started_id
from onnx import numpy_helper

from edgeserve.bundle import read_bundle, write_bundle


def make_broken(good: Path, broken: Path) -> None:
    """v2 with one NaN bias: loads, runs, and answers NaN for every input."""
    model = onnx.load(str(good))
    for i, tensor in enumerate(model.graph.initializer):
        if tensor.name == "b2":
            bias = numpy_helper.to_array(tensor).copy()
            bias[3] = np.nan
            model.graph.initializer[i].CopyFrom(numpy_helper.from_array(bias, "b2"))
    onnx.save(model, str(broken))


def swap_model(good_bundle: Path, model: Path, out: Path) -> None:
    """A copy of ``good_bundle`` whose model file is ``model`` (hashes recomputed)."""
    bundle = read_bundle(good_bundle)
    files = {
        entry.path: (model if entry.role == "model" else good_bundle / entry.path, entry.role)
        for entry in bundle.manifest.files
    }
    write_bundle(out, bundle.manifest, files, overwrite=True)


def main(workdir: Path) -> int:
    qs = Quickstart(workdir, agents=3, steps_total=7)
    try:
        qs.setup()  # steps 1-4: model, conversion, broker + fleet server + agents, v1 everywhere

        qs.step(
            f"build a broken {MODEL} v2: a diverged checkpoint (NaN weights) bundled by mistake"
        )
        # the bundle is made from the good v2 (validated by the converter), then its model file
        # is swapped for the diverged one - a packaging mistake no offline check sees
        qs.table(qs.sup.run([
            "convert", f"models/{MODEL}-v2.onnx", "--target", "onnx-cpu-fp32", "--name", MODEL,
            "--version", "2", "--output", "build/good-v2", "--validation",
            "models/validation.npy", "--labels", "models/labels.npy",
        ]))  # fmt: skip
        make_broken(workdir / f"models/{MODEL}-v2.onnx", workdir / "models/broken-v2.onnx")
        swap_model(
            workdir / "build/good-v2",
            workdir / "models/broken-v2.onnx",
            workdir / "build/broken-v2",
        )
        qs.note("build/broken-v2: the v2 manifest and sample inputs, the diverged model file")
        qs.sup.run(["fleet", "release", "build/broken-v2", "--key", "keys/release.key"])

        qs.step("canary rollout of v2 with a zero-failure gate: watch it roll back")
        out = qs.sup.run([
            "fleet", "rollout", "start", "--model", MODEL, "--version", "2",
            "--phases", "10,100", "--max-failure-pct", "0", "--min-devices", "1",
        ]).strip()  # fmt: skip
        qs.note(out)
        rollout_id = started_id("rollout", out)
        try:
            qs.wait_rollout(rollout_id, timeout_s=90)
            raise SystemExit("the broken v2 rolled out: the health gate did not catch it")
        except StepFailed as stopped:
            qs.note(f"stopped by the fleet: {stopped}")
        qs.table(qs.sup.run(["fleet", "rollout", "status", str(rollout_id)]))
        status = json.loads(
            qs.sup.run(["fleet", "rollout", "status", str(rollout_id), "--json"], quiet=True)
        )
        for failure in status["failures"]:
            qs.note(
                f"{failure['device']} failed v{failure['version']} in phase {failure['phase']}%: "
                f"{failure['state']} {failure['reason_code']}: {failure['error'][:90]}"
            )
        if not status["failures"]:
            raise SystemExit("the rollout keeps no record of why the canary failed")
        qs.note("audit log (edgeserve fleet audit --rollout):")
        qs.table(qs.sup.run(["fleet", "audit", "--rollout", str(rollout_id)]))

        qs.step("check: every device still serves v1, predictions are right")
        qs.wait_all_active(1, timeout_s=60)
        for agent in qs.agents:
            body = qs.infer(agent, qs.digits.x_test[:32])  # type: ignore[union-attr]
            probs = np.asarray(body["outputs"][0]["data"]).reshape(body["outputs"][0]["shape"])
            accuracy = float((probs.argmax(1) == qs.digits.y_test[:32]).mean())  # type: ignore[union-attr]
            active = qs.agent_active(agent)
            qs.note(
                f"{agent.device}: active v{active}, answered by v{body['model_version']}, "
                f"{accuracy:.0%} of 32 digits right"
            )
            if active != 1 or str(body["model_version"]) != "1" or accuracy < 0.85:
                raise SystemExit(f"{agent.device} is not back on a healthy v1")
        qs.echo("\ncanary rollback: v2 stopped, every device on v1")
        return 0
    finally:
        qs.close()


if __name__ == "__main__":
    if len(sys.argv) > 1:
        work = Path(sys.argv[1])
        work.mkdir(parents=True, exist_ok=True)
        sys.exit(main(work))
    tmp = Path(tempfile.mkdtemp(prefix="edgeserve-canary-"))
    try:
        sys.exit(main(tmp))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
