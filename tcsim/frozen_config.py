"""The frozen, validated base of tcsim's configuration classes and its error messages.

:class:`FrozenConfig` is the pydantic base that :class:`~tcsim.datapath.Datapath`,
:class:`~tcsim.gpu_model.GpuModel` and :class:`~tcsim.recipe.Recipe` share: frozen, unknown keys
rejected, every validation error raised as a :class:`~tcsim.errors.ConfigError` whose message
:func:`config_error_message` writes (one line per bad field).
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, ValidationError

from .errors import ConfigError


class FrozenConfig(BaseModel):
    """The base of tcsim's configuration classes (Datapath, InstructionPath, GpuModel, Scaling,
    Recipe): frozen, unknown keys rejected, and validated on every way in: a bad value raises
    :class:`~tcsim.errors.ConfigError` (a ValueError) with pydantic's field messages, from the
    constructor, ``model_validate`` and ``model_copy(update=...)`` alike."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    def __init__(self, /, **data):
        try:
            super().__init__(**data)
        except ValidationError as exc:
            raise _as_config_error(exc) from None

    # pydantic calls a model's own __init__ for nested models unless told it is the base one:
    # nested models are then validated inside the outer validation, so their errors keep their
    # place (paths.3.surprise) and the outer ValidationError is converted once, above
    __init__.__pydantic_base_init__ = True

    @classmethod
    def model_validate(cls, obj, **kwargs):
        try:
            return super().model_validate(obj, **kwargs)
        except ValidationError as exc:
            raise _as_config_error(exc) from None

    def model_copy(self, *, update=None, deep: bool = False):
        """A copy; with ``update``, validated as a new instance would be (pydantic's own
        model_copy does not validate: block_size=0 would reach the kernels)."""
        if not update:
            return super().model_copy(deep=deep)
        return type(self)(**(dict(self) | dict(update)))


def config_error_message(exc: Exception, where: str = "") -> str:
    """Turn a pydantic ValidationError (or a ConfigError wrapping one) into one readable line
    per bad field."""
    errors = getattr(exc, "field_errors", None)
    if not errors and callable(getattr(exc, "errors", None)):
        errors = exc.errors()
    if not errors:
        return f"{where}{exc}"
    lines = []
    for err in errors:
        loc = ".".join(str(x) for x in err.get("loc", ())) or "(model)"
        lines.append(f"{where}{loc}: {err.get('msg', '')}")
    return "\n".join(lines)


def _as_config_error(exc: ValidationError) -> ConfigError:
    return ConfigError(config_error_message(exc), field_errors=exc.errors(include_url=False))
