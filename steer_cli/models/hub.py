"""Hub ids and local model directories, loaded with ``from_pretrained``; an unreachable hub
falls back to the local Hugging Face cache at once instead of after its retries."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from typing import TypeVar

import torch

from steer_cli.errors import SteerError
from steer_cli.models.names import HUB_HINT

T = TypeVar("T")


@contextlib.contextmanager
def no_progress_bars() -> Iterator[None]:
    from transformers.utils import logging as hf_logging

    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if bars:
            hf_logging.enable_progress_bar()


def looks_like_path(name: str) -> bool:
    return (
        name.startswith(("/", "./", "../", "~", ".\\", "..\\"))
        or os.path.isabs(name)
        or name.endswith(("/", os.sep))
        or name.count("/") > 1
        or "\\" in name
    )


def load_pretrained(
    name: str,
    torch_dtype: torch.dtype,
    *,
    trust_remote_code: bool = False,
    safetensors_only: bool = False,
):
    """``(model, tokenizer)`` of a hub id or a local model directory."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    options = {"trust_remote_code": trust_remote_code}
    if safetensors_only:
        options["use_safetensors"] = True  # never unpickle a .bin

    def load(source: str, local_only: bool):
        tokenizer = AutoTokenizer.from_pretrained(
            source, local_files_only=local_only, trust_remote_code=trust_remote_code
        )
        model = AutoModelForCausalLM.from_pretrained(
            source, dtype=torch_dtype, local_files_only=local_only, **options
        )
        return model, tokenizer

    return from_source(name, load)


def from_source(name: str, load: Callable[[str, bool], T]) -> T:
    """``load(source, local_only)`` for a hub id or local directory ``name``, with what goes
    wrong (a file, a folder without config.json, an unreachable hub, a missing repo) as a
    clear error. Used for full models and for skeletons (config and tokenizer only)."""
    path = os.path.expanduser(name)
    is_local = os.path.exists(path)
    if is_local:
        if not os.path.isdir(path):
            raise SteerError(
                f"Model path {name!r} is a file, not a model directory.",
                "Point at the directory holding config.json and the weights.",
            )
        if not os.path.isfile(os.path.join(path, "config.json")):
            raise SteerError(
                f"Model directory {name!r} has no config.json, so it is not a model directory.",
                "Point at a directory written by save_pretrained (config, weights, tokenizer).",
            )
        source = path
    elif looks_like_path(name):
        raise SteerError(f"Model directory {name!r} does not exist.", HUB_HINT)
    else:
        source = name

    # huggingface_hub retries unreachable hosts with backoff (~45 s before failing), so for a
    # hub id check reachability first and, when the hub cannot be reached, go straight to the
    # local HF cache instead of waiting for the retries.
    local_only = is_local or hub_offline() or not hub_reachable()
    # A bar for reading weights off local disk is noise (a hub download keeps its bars).
    bars = no_progress_bars() if is_local else contextlib.nullcontext()
    try:
        with bars:
            return load(source, local_only)
    except SteerError:
        raise
    except Exception as exc:
        if not (is_load_failure(exc) or (is_local and isinstance(exc, ValueError))):
            raise
        if is_local:
            where = "disk"
        elif local_only:
            where = "the hub or disk (the hub is unreachable or offline mode is on, and it is "
            where += "not in the local Hugging Face cache)"
        else:
            where = "the hub or disk"
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise SteerError(f"Could not load model {name!r} from {where}: {first}", HUB_HINT) from exc


def hub_offline() -> bool:
    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}:
        return True
    try:
        from huggingface_hub import constants
    except ImportError:  # pragma: no cover
        return False
    return bool(getattr(constants, "HF_HUB_OFFLINE", False))


_HUB_PROBE: dict[str, bool] = {}


def hub_reachable(timeout: float = 3.0) -> bool:
    """One quick HEAD request to the hub endpoint (honours HF_ENDPOINT and proxy variables)."""
    import threading
    import urllib.error
    import urllib.request

    try:
        from huggingface_hub import constants

        endpoint = constants.ENDPOINT
    except ImportError:  # pragma: no cover
        endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    if endpoint in _HUB_PROBE:
        return _HUB_PROBE[endpoint]
    result = [False]

    def probe() -> None:
        try:
            urllib.request.urlopen(urllib.request.Request(endpoint, method="HEAD"), timeout=timeout)
            result[0] = True
        except urllib.error.HTTPError:  # the server answered: reachable
            result[0] = True
        except Exception:  # noqa: BLE001 - DNS failure, refused, timeout, TLS...
            result[0] = False

    # DNS resolution ignores the socket timeout, so bound the whole probe with a thread.
    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(timeout + 2.0)
    _HUB_PROBE[endpoint] = result[0] and not thread.is_alive()
    return _HUB_PROBE[endpoint]


def is_load_failure(exc: BaseException) -> bool:
    if isinstance(exc, OSError):  # includes missing repos, offline misses, missing files
        return True
    try:
        from huggingface_hub import errors as hub_errors
    except ImportError:  # pragma: no cover
        return False
    hub_types = tuple(
        t
        for t in (
            getattr(hub_errors, "HFValidationError", None),
            getattr(hub_errors, "HfHubHTTPError", None),
            getattr(hub_errors, "OfflineModeIsEnabled", None),
            getattr(hub_errors, "LocalEntryNotFoundError", None),
            getattr(hub_errors, "RepositoryNotFoundError", None),
        )
        if isinstance(t, type)
    )
    if hub_types and isinstance(exc, hub_types):
        return True
    # httpx / requests connection errors, if they leak through
    return type(exc).__module__.split(".")[0] in {"httpx", "httpcore", "requests", "urllib3"}
