"""The host side of scripts/test-devices, for one Debian arm64 root filesystem under qemu-user.

Installs the agent in the rootfs with devices/install-agent.sh (``--no-systemd``, run in a
chroot), verifies the unit it wrote with ``systemd-analyze verify``, installs an ONNX and a
TFLite bundle with ``edgeserve agent install`` as the service user, starts the agent from the
unit's ``ExecStart`` (as its ``User``, with its ``Environment``), and checks from the host with
tritonclient that both answer what the models compute. Fleet sync in that agent connects to a
Mosquitto broker on the host and installs a release signed with fresh keys, served by an
artifact server on the host; then the new model must answer too. Finally the installer's
``--uninstall --purge`` leaves the rootfs as it found it. Prints one summary line per suite.

Run by scripts/test-devices (as root, with the rootfs's /proc, /sys, /dev mounted); exit 1 on
any failure, with the agent's log.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
import tritonclient.http as httpclient

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from device_chroot import PATH, CheckError, in_root, stage_tree, unit_settings, verify_unit  # noqa: E402
from support.artifact_server import ArtifactServer  # noqa: E402
from support.broker import Mosquitto, free_port  # noqa: E402
from support.fleet_keys import make_fleet_keys, make_signed_bundle  # noqa: E402
from support.fleet_sync import FLEET, FleetDriver, Release, model_state  # noqa: E402
from support.models import make_linear_bundle  # noqa: E402

from edgeserve.bundle import Bundle, read_bundle, write_bundle  # noqa: E402
from edgeserve.bundle.manifest import Manifest, TensorSpec  # noqa: E402
from edgeserve.errors import EdgeServeError  # noqa: E402

STAGE = "/tmp/edgeserve-device-test"  # inside the rootfs
USER = "edgeserve"
# qemu-user runs arm64 code 5-20x slower than the host: generous bounds, still finite
INSTALL_TIMEOUT_S = 900
READY_TIMEOUT_S = 300
FLEET_TIMEOUT_S = 300


def make_tflite_bundle(directory: Path, w: np.ndarray, b: np.ndarray) -> Bundle:
    """y = tanh(x @ W + b), converted with TensorFlow on the host (the convert-tf extra)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import tensorflow as tf

    @tf.function(input_signature=[tf.TensorSpec([None, 4], tf.float32, name="x")])
    def model(x):  # type: ignore[no-untyped-def]
        return {"y": tf.tanh(tf.matmul(x, tf.constant(w)) + tf.constant(b))}

    converter = tf.lite.TFLiteConverter.from_concrete_functions(
        [model.get_concrete_function()], model
    )
    directory.parent.mkdir(parents=True, exist_ok=True)
    path = directory.parent / "tanh.tflite"
    path.write_bytes(converter.convert())
    manifest = Manifest(
        name="tflite-tanh",
        version=1,
        format="tflite",
        precision="fp32",
        target="tflite-fp32",
        providers=(),
        inputs=(TensorSpec("x", "FP32", (-1, 4)),),
        outputs=(TensorSpec("y", "FP32", (-1, 3)),),
    )
    return write_bundle(directory, manifest, {"model.tflite": (path, "model")})


def onnx_reference(bundle: Bundle, x: np.ndarray) -> np.ndarray:
    """What the host's ONNX Runtime computes for the bundle's model."""
    import onnxruntime

    sess = onnxruntime.InferenceSession(
        str(bundle.path / "model.onnx"), providers=["CPUExecutionProvider"]
    )
    (y,) = sess.run(["y"], {"x": x})
    return np.asarray(y)


def infer(client: httpclient.InferenceServerClient, model: str, x: np.ndarray, binary: bool):
    inp = httpclient.InferInput("x", list(x.shape), "FP32")
    inp.set_data_from_numpy(x, binary_data=binary)
    out = httpclient.InferRequestedOutput("y", binary_data=binary)
    return client.infer(model, [inp], outputs=[out]).as_numpy("y")


def run_suite(args: argparse.Namespace, work: Path) -> str:
    rootfs: Path = args.rootfs
    stage = rootfs / STAGE.lstrip("/")
    shutil.rmtree(stage, ignore_errors=True)
    stage.mkdir(parents=True)
    stage.chmod(0o755)
    stage_tree(args.devices, stage / "devices")
    shutil.copy2(args.wheel, stage / args.wheel.name)
    installer = [
        "bash",
        f"{STAGE}/devices/install-agent.sh",
        "--no-systemd",
        "--profile",
        "rpi4",
    ]
    # a previous run that failed half-way may have left an install behind
    in_root(rootfs, *installer, "--uninstall", "--purge")

    keys = make_fleet_keys(work / "keys")
    shutil.copy2(keys.anchor_path, stage / "root.json")
    broker = Mosquitto(work / "broker").start()
    artifacts = ArtifactServer().start()
    device = f"arm64-{args.suite}"
    port = free_port()
    (stage / "fleet.txt").write_text(
        "[fleet]\n"
        f'broker = "{broker.url}"\n'
        f'fleet = "{FLEET}"\n'
        f'device = "{device}"\n'
        'prefix = "es/"\n'
        'trust_anchor = "root.json"\n'
        "retry_backoff_s = 1\n"
        "download_timeout_s = 120\n"
    )
    (stage / "fleet.txt").chmod(0o644)
    agent: subprocess.Popen[bytes] | None = None
    log_path = work / "agent.log"
    try:
        t0 = time.monotonic()
        out = in_root(
            rootfs,
            *installer,
            "--package",
            f"{STAGE}/{args.wheel.name}",
            "--fleet-config",
            f"{STAGE}/fleet.txt",
            "--trust-anchor",
            f"{STAGE}/root.json",
            "--port",
            str(port),
            timeout=INSTALL_TIMEOUT_S,
        )
        install_s = time.monotonic() - t0
        tflite_choice = next(
            line.split(": ", 1)[1] for line in out.splitlines() if "TFLite runtime: " in line
        )
        venv_python = "/opt/edgeserve/venv/bin/python"
        versions = json.loads(
            in_root(
                rootfs,
                venv_python,
                "-c",
                "import importlib.metadata as m, json, platform, sys\n"
                "def v(n):\n"
                "    try:\n        return m.version(n)\n"
                "    except m.PackageNotFoundError:\n        return None\n"
                "print(json.dumps({'python': platform.python_version(),"
                " 'machine': platform.machine(), 'glibc': platform.libc_ver()[1],"
                " 'onnxruntime': v('onnxruntime'), 'tflite-runtime': v('tflite-runtime'),"
                " 'ai-edge-litert': v('ai-edge-litert'), 'numpy': v('numpy')}))",
            )
        )
        if versions["machine"] != "aarch64":
            raise CheckError(f"the rootfs runs {versions['machine']}, not aarch64")
        expected = "tflite-runtime" if tflite_choice == "tflite-runtime" else "ai-edge-litert"
        if versions[expected] is None:
            raise CheckError(f"installer chose {tflite_choice} but {expected} is not installed")
        unit_path = "/etc/systemd/system/edgeserve-agent.service"
        verify_unit(rootfs, unit_path)
        unit = rootfs / unit_path.lstrip("/")

        # the bundles, installed as the service user into the state directory
        rng = np.random.default_rng(11)
        w = rng.standard_normal((4, 3)).astype(np.float32)
        b = rng.standard_normal(3).astype(np.float32)
        onnx_bundle = make_linear_bundle(work / "bundles/onnx", name="onnx-linear", seed=7)
        tflite_bundle = make_tflite_bundle(work / "bundles/tflite", w, b)
        for bundle in (onnx_bundle, tflite_bundle):
            stage_tree(bundle.path, stage / "bundles" / bundle.manifest.name)
            in_root(
                rootfs,
                "/opt/edgeserve/venv/bin/edgeserve",
                "agent",
                "install",
                f"{STAGE}/bundles/{bundle.manifest.name}",
                "--state",
                "/var/lib/edgeserve",
                user=USER,
                timeout=300,
            )

        # the agent, as the unit starts it
        exec_start, unit_env = unit_settings(unit)
        user = unit_env.pop("__user__", USER)
        env = [f"{k}={v}" for k, v in unit_env.items()]
        qemu_cpu = [f"QEMU_CPU={os.environ['QEMU_CPU']}"] if "QEMU_CPU" in os.environ else []
        t0 = time.monotonic()
        with log_path.open("wb") as log:
            agent = subprocess.Popen(
                [
                    "chroot",
                    f"--userspec={user}:{user}",
                    str(rootfs),
                    "/usr/bin/env",
                    "-i",
                    f"PATH={PATH}",
                    "HOME=/var/lib/edgeserve",
                    *qemu_cpu,
                    *env,
                    *exec_start,
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + READY_TIMEOUT_S
        while True:
            if agent.poll() is not None:
                raise CheckError(f"the agent exited with {agent.returncode}")
            try:
                if httpx.get(f"{url}/v2/health/ready", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise CheckError(f"the agent was not ready after {READY_TIMEOUT_S} s")
            time.sleep(0.5)
        ready_s = time.monotonic() - t0

        client = httpclient.InferenceServerClient(f"127.0.0.1:{port}", network_timeout=120)
        checked = 0
        try:
            x = rng.standard_normal((3, 4)).astype(np.float32)
            t0 = time.monotonic()
            y = infer(client, "onnx-linear", x, binary=False)
            first_s = time.monotonic() - t0
            np.testing.assert_allclose(y, onnx_reference(onnx_bundle, x), rtol=1e-5, atol=1e-6)
            checked += 1
            for rows, binary in ((1, True), (5, False), (2, True)):
                x = rng.standard_normal((rows, 4)).astype(np.float32)
                y = infer(client, "onnx-linear", x, binary)
                np.testing.assert_allclose(y, onnx_reference(onnx_bundle, x), rtol=1e-5, atol=1e-6)
                checked += 1
                y = infer(client, "tflite-tanh", x, binary)
                np.testing.assert_allclose(y, np.tanh(x @ w + b), rtol=1e-5, atol=1e-6)
                checked += 1
            meta = httpx.get(f"{url}/v2/models/tflite-tanh", timeout=30).json()
            if meta.get("platform") != "tensorflow_lite":
                raise CheckError(f"tflite-tanh metadata: {meta}")

            # fleet sync: a signed release from the broker and artifact server on the host
            signed = read_bundle(
                make_signed_bundle(
                    work / "bundles/fleet", [keys.release], name="fleet-linear", seed=5
                ).path
            )
            release = Release(signed, artifacts, work, "fleet-linear-v1")
            driver = FleetDriver(broker.url, keys)
            try:
                t0 = time.monotonic()
                keyring = json.loads(keys.keyring_bytes)
                driver.publish(
                    device,
                    driver.desired(device, {"fleet-linear": release.target()}, keyrings=[keyring]),
                )
                driver.wait_report(
                    device, model_state("fleet-linear", "ACTIVE", 1), timeout_s=FLEET_TIMEOUT_S
                )
                fleet_s = time.monotonic() - t0
            finally:
                driver.close()
            x = rng.standard_normal((4, 4)).astype(np.float32)
            y = infer(client, "fleet-linear", x, binary=True)
            np.testing.assert_allclose(y, onnx_reference(signed, x), rtol=1e-5, atol=1e-6)
            checked += 1
        finally:
            client.close()

        agent.send_signal(signal.SIGTERM)
        code = agent.wait(timeout=60)
        agent = None
        if code != 0:
            raise CheckError(f"the agent exited with {code} on SIGTERM")
    finally:
        if agent is not None and agent.poll() is None:
            agent.kill()
            agent.wait()
        artifacts.stop()
        broker.stop()
    in_root(rootfs, *installer, "--uninstall", "--purge")
    if (rootfs / "opt/edgeserve").exists() or (rootfs / "var/lib/edgeserve").exists():
        raise CheckError("--uninstall --purge left /opt/edgeserve or /var/lib/edgeserve behind")
    shutil.rmtree(stage, ignore_errors=True)

    tflite = (
        f"tflite-runtime {versions['tflite-runtime']}"
        if tflite_choice == "tflite-runtime"
        else f"ai-edge-litert {versions['ai-edge-litert']}"
    )
    return (
        f"{args.suite} arm64 (Python {versions['python']}, glibc {versions['glibc']}): "
        f"install {install_s:.0f} s; onnxruntime {versions['onnxruntime']}, {tflite}, "
        f"numpy {versions['numpy']}; agent ready {ready_s:.1f} s, first inference "
        f"{first_s:.2f} s; {checked} answers checked (ONNX, TFLite, fleet release); "
        f"fleet sync installed a signed release in {fleet_s:.1f} s"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rootfs", type=Path, required=True)
    parser.add_argument("--suite", required=True)
    parser.add_argument("--wheel", type=Path, required=True)
    parser.add_argument("--devices", type=Path, required=True)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix=f"device-{args.suite}-") as tmp:
        work = Path(tmp)
        try:
            summary = run_suite(args, work)
        except (
            CheckError,
            EdgeServeError,
            AssertionError,
            subprocess.TimeoutExpired,
            StopIteration,
        ) as exc:
            print(f"{args.suite}: FAILED: {exc}", file=sys.stderr)
            log = work / "agent.log"
            if log.exists():
                print(
                    f"--- agent log ---\n{log.read_text(errors='replace')[-4000:]}", file=sys.stderr
                )
            return 1
    print(summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
