"""Hub datasets: ``datasets.load_dataset(task.source, task.config)``, failing fast offline.

Without a network it fails in seconds with a :class:`SteerError` that names the dataset and how
to use local files instead (a probe with a timeout, not ``datasets``' minutes of retries).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from steer_cli.data.base import SourceSplit, Task
from steer_cli.errors import SteerError

HUB_PROBE_SECONDS = 3.0


def _truthy(name: str) -> bool:
    return os.environ.get(name, "").strip().upper() in {"1", "ON", "YES", "TRUE"}


def hub_offline_by_env() -> bool:
    return any(
        _truthy(k) for k in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE")
    )


def hub_reachable(timeout: float = HUB_PROBE_SECONDS) -> bool:
    """Whether the hub endpoint answers an HTTPS request within ``timeout`` seconds.

    Any HTTP answer counts (even an error status); a failed resolve, connect or TLS handshake
    does not (a bare TCP connect is not enough: some networks accept every connection). Behind
    a proxy (``HTTPS_PROXY``/``ALL_PROXY``) the hub is assumed reachable. The probe runs in a
    daemon thread, so a resolver that hangs cannot hold us longer than ``timeout``.
    """
    if any(os.environ.get(k) for k in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return True
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/")
    result: list[bool] = []

    def probe() -> None:
        import urllib.error
        import urllib.request

        request = urllib.request.Request(f"{endpoint}/api/datasets", method="HEAD")
        try:
            urllib.request.urlopen(request, timeout=timeout).close()
            result.append(True)
        except urllib.error.HTTPError:
            result.append(True)  # the hub answered
        except (OSError, ValueError):
            result.append(False)

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(timeout)
    return bool(result and result[0])


@contextmanager
def hub_offline_mode(offline: bool) -> Iterator[None]:
    """Put ``datasets`` and ``huggingface_hub`` in offline mode (cache only, no retries) for
    the duration; both read ``HF_HUB_OFFLINE`` once at import, so their flags are set here."""
    if not offline:
        yield
        return
    import datasets.config
    import huggingface_hub.constants as hub_constants

    saved = (
        datasets.config.HF_HUB_OFFLINE,
        getattr(datasets.config, "HF_DATASETS_OFFLINE", None),
        hub_constants.HF_HUB_OFFLINE,
    )
    datasets.config.HF_HUB_OFFLINE = True
    datasets.config.HF_DATASETS_OFFLINE = True
    hub_constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        (
            datasets.config.HF_HUB_OFFLINE,
            datasets.config.HF_DATASETS_OFFLINE,
            hub_constants.HF_HUB_OFFLINE,
        ) = saved


def load_hub(task: Task, needed: list[str]) -> dict[str, SourceSplit]:
    """The ``needed`` source splits of ``task.source`` from the hub (or the local ``datasets``
    cache when offline)."""
    if task.source is None:
        raise SteerError(
            f"task {task.name!r} has no hub dataset",
            "use data.source=local with data.path or data.files"
            + (", or data.source=generator" if task.name == "listops" else ""),
        )
    name = task.source + (f" ({task.config})" if task.config else "")
    offline = hub_offline_by_env() or not hub_reachable()
    try:
        with hub_offline_mode(offline):
            from datasets import load_dataset

            loaded = load_dataset(
                task.source, task.config, cache_dir=os.environ.get("HF_DATASETS_CACHE")
            )
    except Exception as exc:  # datasets raises many types: connection, offline, not found
        why = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        state = "no network and not in the datasets cache" if offline else why
        raise SteerError(
            f"cannot load the dataset {name} from the Hugging Face hub: {state}",
            f"download it where there is a network, or point at local files in the hub's "
            f"schema ({', '.join(task.fields)}): data.source=local data.path=DIR "
            f"(with {', '.join(f'{s}.jsonl' for s in needed)}) or "
            f"data.files.{needed[0] if needed else 'train'}=FILE (jsonl/json/csv/parquet)",
        ) from None
    out = {}
    for split in needed:
        if split not in loaded:
            raise SteerError(
                f"the dataset {name} has no split {split!r} (it has {', '.join(loaded)})",
                "set data.splits to use the splits it has",
            )
        out[split] = SourceSplit(split, f"{name} split {split!r}", loaded[split].to_list())
    return out
