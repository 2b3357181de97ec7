"""deploy/pod.yaml keeps its secrets off the sidecar's command line."""

from __future__ import annotations

import json
from pathlib import Path, PurePosixPath

from sidecar import cli
from sidecar.config import secrets

POD = Path(__file__).resolve().parent.parent / "deploy" / "pod.yaml"


def sidecar_container() -> tuple[str, str]:
    """(the sidecar's init container, the rest of the pod spec), as text."""
    pod = POD.read_text()
    init, _, main = pod.partition("\n  containers:\n")
    return init.partition("\n  initContainers:\n")[2], main


def args() -> list[str]:
    line = next(ln for ln in sidecar_container()[0].splitlines() if ln.strip().startswith("args:"))
    result: list[str] = json.loads(line.split(":", 1)[1])
    return result


def test_no_secret_is_in_the_arguments() -> None:
    text = " ".join(args())
    assert "$(" not in text  # no environment variable expanded into them
    assert "Bearer" not in text and "Authorization" not in text
    header = args()[args().index("--header") + 1]
    assert header.startswith("@/")


def test_the_header_file_is_a_secret_mounted_read_only_into_the_sidecar_alone() -> None:
    init, main = sidecar_container()
    header = PurePosixPath(args()[args().index("--header") + 1][1:])
    mount = (
        f"- name: sidecar-secrets\n          mountPath: {header.parent}\n          readOnly: true"
    )
    assert mount in init
    assert "sidecar-secrets" not in main
    volumes = POD.read_text().partition("\n  volumes:\n")[2].partition("\n  initContainers:")[0]
    volume = volumes.partition("- name: sidecar-secrets\n")[2]
    assert volume.startswith("      secret:\n        secretName: meeting-bot\n")
    assert f"- key: headers\n            path: {header.name}\n" in volume


def test_the_cli_accepts_the_pods_arguments_with_the_secret_file(tmp_path: Path) -> None:
    headers = tmp_path / "headers"
    headers.write_text("# from the Secret\nAuthorization: Bearer t0ken-from-file\n")
    mounted = args()[args().index("--header") + 1][1:]
    argv = [a.replace(mounted, str(headers)) for a in args()]
    config = cli.build_config(
        cli.parser().parse_args(argv), environ={"SIDECAR_URL": "wss://bots.example.com/audio"}
    )
    assert config.url == "wss://bots.example.com/audio"
    assert config.headers == (("Authorization", "Bearer t0ken-from-file"),)
    assert "Bearer t0ken-from-file" in secrets(config)


def test_the_bot_reaches_the_sidecar_through_control_on_the_shared_volume(tmp_path: Path) -> None:
    init, main = sidecar_container()
    control = args()[args().index("--control") + 1]
    # The socket is on the volume both containers mount, at the same path in each.
    mount = "- name: audio-sockets\n          mountPath: "
    shared = init.partition(mount)[2].splitlines()[0]
    assert PurePosixPath(control).parent == PurePosixPath(shared)
    assert f"{mount}{shared}\n" in main
    # The bot is told where it is, and starts only once it exists.
    assert f"- name: SIDECAR_CONTROL\n          value: {control}\n" in main
    probe = next(line for line in init.splitlines() if "S_ISSOCK" in line)
    assert f"'{control}'" in probe
    # The CLI takes the pod's flag as the control socket's path.
    headers = tmp_path / "headers"
    headers.write_text("Authorization: Bearer t0ken\n")
    mounted = args()[args().index("--header") + 1][1:]
    argv = [a.replace(mounted, str(headers)) for a in args()]
    config = cli.build_config(
        cli.parser().parse_args(argv), environ={"SIDECAR_URL": "wss://bots.example.com/audio"}
    )
    assert config.control is not None and str(config.control.path) == control
