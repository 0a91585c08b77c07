"""softlabel_ood.data.prepare_tfds without a network: one line at once, the data directory as it
was. An unreachable proxy stands for the missing network, so the tests behave the same on a
connected machine: requests sends every download and the hosts' check through it."""

from __future__ import annotations

import os
import re
import socket
import time

import pytest

from tests.train_helpers import run_module

# tfds retries a failed download 10 times with exponential backoff: over 200 s offline.
RETRIES_TAKE_S = 100


def _unreachable_proxy() -> dict[str, str]:
    with socket.socket() as s:  # a port nothing listens on once closed: connection refused
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proxy = f"http://127.0.0.1:{port}"
    # requests reads the lower-case names first; a NO_PROXY of the machine must not bypass it.
    return {name: proxy for name in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy")} \
        | {"NO_PROXY": "", "no_proxy": ""}


def _tree(root) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


@pytest.fixture
def data_dir(tmp_path):
    """A data directory that already holds a prepared set and another set's download."""
    root = tmp_path / "tfds"
    (root / "mnist" / "3.0.1").mkdir(parents=True)
    (root / "mnist" / "3.0.1" / "dataset_info.json").write_text("{}")
    (root / "downloads" / "mnist").mkdir(parents=True)
    (root / "downloads" / "mnist" / "train-images-idx3-ubyte.gz").write_bytes(b"\x1f\x8b")
    return root


def test_without_network_preparing_ends_in_one_line_at_once(data_dir):
    before = _tree(data_dir)
    started = time.monotonic()
    result = run_module("softlabel_ood.data.prepare_tfds", "cifar10:3.0.2",
                        f"--data_dir={data_dir}", env=_unreachable_proxy(), timeout=300)
    elapsed = time.monotonic() - started
    assert result.returncode == 2, result.stderr[-3000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr[-3000:]
    assert re.fullmatch(
        r"error: cifar10:3\.0\.2: www\.cs\.toronto\.edu cannot be reached \(ProxyError\), so it "
        r"cannot be prepared here; run the same command on a machine with network access, then "
        rf"copy its data directory over to {re.escape(str(data_dir))} \(rsync -a, .*gs:// "
        r"bucket: docs/reproduction\.md, \"Preparing on a connected machine\"\)", lines[0])
    assert elapsed < RETRIES_TAKE_S  # mostly TensorFlow's import
    assert _tree(data_dir) == before


@pytest.mark.parametrize("existing", [True, False])
def test_a_download_that_fails_later_leaves_nothing_it_created(existing, data_dir, tmp_path,
                                                               monkeypatch):
    # The network goes away after the hosts' check: tfds has created the set's folder and a
    # partial download when the download fails (without retries here, to be quick).
    from tensorflow_datasets.core.download import downloader

    from softlabel_ood.data import prepare_tfds

    for name, value in _unreachable_proxy().items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(prepare_tfds, "check_reachable", lambda name, builder: None)
    monkeypatch.setattr(downloader, "MAX_RETRIES", 0)
    created = []
    real_download = downloader._Downloader._sync_download

    def download(self, url, destination_path, verify=True):
        created.append(sorted(os.listdir(data_dir)))  # what tfds made before downloading
        return real_download(self, url, destination_path, verify)

    monkeypatch.setattr(downloader._Downloader, "_sync_download", download)
    if not existing:  # a data directory in a folder that does not exist either
        data_dir = tmp_path / "new" / "tfds"
    before = _tree(tmp_path)
    with pytest.raises(prepare_tfds.PrepareError,
                       match=r"^cifar10:3\.0\.2: its download failed \(ProxyError\), so it cannot "
                             r"be prepared here; run the same command on a machine with network "
                             r"access"):
        prepare_tfds.prepare(["cifar10:3.0.2"], str(data_dir))
    assert created == [["cifar10", "downloads", "mnist"] if existing else ["cifar10", "downloads"]]
    assert _tree(tmp_path) == before
