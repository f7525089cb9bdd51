"""The preparation config: every cleaning and filtering rule, typed and JSON round-trippable."""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field, field_validator

from lmrec.columns import DEFAULT_EVENT, Role

DEFAULT_BEHAVIOUR_WEIGHTS: dict[str, float] = {
    "view": 1.0, "pv": 1.0, "click": 1.0, "impression": 0.5,
    "favourite": 2.0, "favorite": 2.0, "fav": 2.0, "like": 2.0, "wishlist": 2.0,
    "cart": 3.0, "add_to_cart": 3.0,
    "purchase": 4.0, "buy": 4.0, "order": 4.0,
    "rating": 1.0, DEFAULT_EVENT: 1.0,
}


class Dedupe(StrEnum):
    NONE = "none"  # keep every row
    EXACT = "exact"  # drop rows equal in every column
    USER_ITEM = "user-item"  # one row per (user, item)
    USER_ITEM_EVENT = "user-item-event"  # one row per (user, item, behaviour type)


class Keep(StrEnum):
    FIRST = "first"  # earliest by timestamp (file order when there is none)
    LAST = "last"  # latest
    MAX_VALUE = "max-value"  # highest value, e.g. the best rating


class MissingEvent(StrEnum):
    FILL = "fill"  # use `default_event`
    DROP = "drop"


class MissingOptional(StrEnum):
    KEEP = "keep"  # leave null; models treat null as "unknown"
    DROP = "drop"


class PrepareConfig(BaseModel):
    """Rules for turning collected events and tables into a Dataset. Unknown keys are refused."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # deduplication
    dedupe: Dedupe = Dedupe.EXACT
    dedupe_keep: Keep = Keep.LAST
    # missing values in events (a missing user or item id is always a bad row)
    missing_event: MissingEvent = MissingEvent.FILL
    default_event: str = DEFAULT_EVENT
    missing_timestamp: MissingOptional = MissingOptional.KEEP
    missing_value: MissingOptional = MissingOptional.KEEP
    # timestamps: Unix numbers and ISO-8601 unless a strptime format is given
    time_format: str | None = Field(
        None, description="strptime format of text timestamps, e.g. '%d/%m/%Y %H:%M'"
    )
    allow_negative_time: bool = Field(
        False, description="accept negative Unix timestamps (before 1970)"
    )
    # noise
    time_min: int | None = Field(None, description="drop events before this Unix time")
    time_max: int | None = Field(None, description="drop events after this Unix time")
    future_tolerance_s: float | None = Field(
        86_400.0, description="drop events later than now plus this; None keeps them"
    )
    max_user_events: int | None = Field(
        None, ge=1, description="drop users with more events (bots); None flags only"
    )
    burst_max: int | None = Field(
        None, ge=1, description="at most this many events of one user in burst_window_s"
    )
    burst_window_s: float = Field(1.0, gt=0)
    # filters
    min_rating: float | None = None
    core: int | None = Field(None, ge=1, description="k-core on users and items")
    user_core: int | None = Field(None, ge=1)
    item_core: int | None = Field(None, ge=1)
    # behaviour weights
    behaviour_weights: dict[str, float] = Field(
        default_factory=lambda: dict(DEFAULT_BEHAVIOUR_WEIGHTS)
    )
    unknown_behaviour_weight: float = 1.0
    # feature tables
    multi_separator: str = "|"
    user_roles: dict[str, Role] = Field(default_factory=dict)
    item_roles: dict[str, Role] = Field(default_factory=dict)

    @field_validator("time_format")
    @classmethod
    def _known_directives(cls, v: str | None) -> str | None:
        if v is not None:
            from lmrec.collect.timeparse import check_time_format
            from lmrec.errors import InputError

            try:
                check_time_format(v)
            except InputError as exc:
                raise ValueError(str(exc)) from None
        return v

    @field_validator("behaviour_weights")
    @classmethod
    def _positive_weights(cls, v: dict[str, float]) -> dict[str, float]:
        for k, w in v.items():
            if w < 0:
                raise ValueError(f"behaviour weight for {k!r} is negative ({w})")
        return v

    @property
    def user_k(self) -> int | None:
        return self.user_core or self.core

    @property
    def item_k(self) -> int | None:
        return self.item_core or self.core
