"""Error types. Library code raises these; only the CLI turns them into exit codes."""

from __future__ import annotations


class SgedgeError(Exception):
    """Base class: the message names the problem and what to do about it."""


class InputError(SgedgeError):
    """A file or argument given by the user is missing, malformed or unsupported."""


class UnsupportedModelError(InputError):
    """The model architecture or a feature of it is not supported."""


class AdapterError(InputError):
    """A PEFT adapter cannot be exported (format, feature, or fit to the base)."""


class AdapterMismatchError(SgedgeError):
    """An exported adapter does not belong to the loaded base model."""


class BackendError(SgedgeError):
    """The inference engine failed (load, decode, missing optional package)."""
