"""Constructor arguments become the saved configuration, for systems and encoders alike.

As huggingface_hub's ``ModelHubMixin`` does, the arguments an object was built with (defaults filled in, ``**kwargs``
followed up the class hierarchy to the ``__init__`` that names them) are recorded when it is built, so
``config.json`` rebuilds it with ``cls(**config)``. One mechanism replaces hand-kept config dicts, which drift from
the signature. A class whose saved value must differ from the given one (a checkpoint path replaced by the
architecture read from it, a size learnt during ``setup``) says so in :meth:`CapturesInit.saved_config`.
"""

from __future__ import annotations

import copy
import inspect
from typing import Any


def _init_arguments(cls: type, args: tuple, kwargs: dict) -> dict[str, Any]:
    """Every named ``__init__`` argument of ``cls`` with its value, following ``**kwargs`` to the base class."""
    owner = next(c for c in cls.__mro__ if "__init__" in c.__dict__)
    signature = inspect.signature(owner.__init__)
    params = signature.parameters
    bound = signature.bind(None, *args, **kwargs)
    bound.apply_defaults()
    out, rest = {}, {}
    for name, value in list(bound.arguments.items())[1:]:  # [0] is self
        kind = params[name].kind
        if kind is inspect.Parameter.VAR_KEYWORD:
            rest = value
        elif kind is inspect.Parameter.VAR_POSITIONAL:
            if value:
                raise TypeError(f"{cls.__name__}: positional *args cannot be saved in a config")
        else:
            out[name] = value
    has_varkw = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    if has_varkw:
        base = next((c for c in owner.__mro__[1:] if "__init__" in c.__dict__), object)
        if base is not object and base.__init__ is not object.__init__:
            out = {**_init_arguments(base, (), rest), **out}  # a subclass's own value wins over the base default
        else:
            out.update(rest)
    return out


class _CaptureInit(type):
    """Metaclass: records the outermost constructor call's arguments on the new object as ``_init_config``."""

    def __init__(cls, name, bases, namespace, **kwargs):
        super().__init__(name, bases, namespace, **kwargs)
        # inspect.signature(cls) would otherwise report this metaclass's (*args, **kwargs) to LightningCLI & co.
        init = inspect.signature(cls.__init__)
        cls.__signature__ = init.replace(parameters=list(init.parameters.values())[1:])

    def __call__(cls, *args, **kwargs):
        arguments = _init_arguments(cls, args, kwargs)
        obj = super().__call__(*args, **kwargs)
        object.__setattr__(obj, "_init_config", copy.deepcopy(arguments))
        return obj


class CapturesInit(metaclass=_CaptureInit):
    """Mixin for anything saved as ``config.json``: ``config`` holds the constructor arguments it was built with."""

    @property
    def config(self) -> dict[str, Any]:
        """Constructor arguments (JSON-ready) that rebuild this object; see :meth:`saved_config`."""
        return self.saved_config(copy.deepcopy(self._init_config))

    def saved_config(self, config: dict[str, Any]) -> dict[str, Any]:
        """Hook for arguments whose saved value differs from the given one; the default saves them as given."""
        return config

    def reconfigured(self, **changes: Any) -> None:
        """Record that this object now stands for other constructor arguments (a cheap reconfigured copy)."""
        object.__setattr__(self, "_init_config", {**copy.deepcopy(self._init_config), **changes})
