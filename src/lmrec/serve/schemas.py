"""Request and response bodies of the HTTP API (pydantic; unknown fields are refused).

Ids travel as JSON strings or integers and are handled as strings inside the service (the
store keeps TEXT ids; an integer vocabulary matches 196 and "196", but not "0196": see
`IdVocabulary.canonical`). Ids and behaviour types follow the rules `data prepare` applies
(`lmrec.ids`): ids without whitespace at either end, control or bidirectional-formatting
characters; types of printable text (`浏览` included). Other text fields refuse control
characters, which PostgreSQL TEXT cannot hold (NUL). User and item ids also refuse "/": routes
decode %2F, so such an id could be stored but never read or deleted through /v1/users/{user} or
/v1/items/{item}.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationInfo,
)

from lmrec.ids import MAX_EVENT_TYPE_LENGTH, event_type_problem, id_problem

MAX_ID_LENGTH = 256
MAX_HISTORY = 1_000  # items in an anonymous visitor's history
MAX_K = 1_000
MAX_CANDIDATES = 10_000  # items in a request's allow-list
MAX_RERANK = 8  # re-ranking stages in one request
RERANK_HELP = ("a re-ranker NAME=WEIGHT[:ARG]; repeatable: mmr=0.3, calibration=0.5[:COLUMN], "
               "fair=P[:GROUP], exposure=W[:GROUP], suitability=ITEMCOL<=USERCOL, "
               "freshness=W[:TIMECOL[:HALF_LIFE_DAYS]] (lmrec.rerank)")
TEXT_PATTERN = r"^[^\x00-\x1f\x7f]+$"
_ID_TEXT = r"^[^\x00-\x1f\x7f/]+$"


def _id_text(value: Any, info: ValidationInfo) -> Any:
    """One clear error for an id string that `lmrec.ids` or a URL path cannot take (the
    pattern alone would report every union arm)."""
    if isinstance(value, str):
        problem = id_problem(value) or ("an id may not contain '/' (it could not be used in a "
                                        "URL path)" if "/" in value else None)
        if problem:
            raise ValueError(f"{info.field_name}: {problem}" if info.field_name else problem)
    return value


def _event_type(value: str) -> str:
    problem = event_type_problem(value)
    if problem:
        raise ValueError(problem)
    return value


Text = Annotated[str, StringConstraints(min_length=1, max_length=MAX_ID_LENGTH,
                                        pattern=TEXT_PATTERN)]
# an external id: a string without "/", or an integer for integer-keyed catalogues (|id| < 2^63)
Id = Annotated[
    Annotated[str, StringConstraints(min_length=1, max_length=MAX_ID_LENGTH, pattern=_ID_TEXT)]
    | Annotated[int, Field(ge=-(2**63) + 1, le=2**63 - 1)],
    BeforeValidator(_id_text)]
# a user or item id in a URL path (a "/" cannot reach it)
PathIdText = Annotated[str, BeforeValidator(_id_text)]
# printable text, e.g. "view", "add to cart", "浏览" (lmrec.ids.event_type_problem)
EventType = Annotated[str, StringConstraints(min_length=1, max_length=MAX_EVENT_TYPE_LENGTH),
                      AfterValidator(_event_type)]
# a recommendation response's id (uuid4 hex, as the service writes them)
RequestId = Annotated[str, StringConstraints(min_length=32, max_length=32,
                                             pattern=r"^[0-9a-f]{32}$")]
# a filter "column:value"; "column:a|b" matches either value; "column:lo..hi" a range;
# "column<x" (<=, >, >=) a comparison (lmrec.serve.filters)
Filter = Annotated[str, StringConstraints(
    min_length=3, max_length=512,
    pattern=r"^[^\x00-\x1f\x7f:<>]+(:|<=|>=|<|>)[^\x00-\x1f\x7f]+$")]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


# --- requests ------------------------------------------------------------------------------
class EventBody(Strict):
    """One behaviour event. `timestamp`: Unix seconds (the server's clock when missing);
    `event_id`: an idempotency key scoped to the user (an id this user already sent is
    acknowledged, not stored again); `value`: e.g. a rating or a quantity."""

    user: Id
    item: Id
    type: EventType = "view"
    timestamp: float | None = Field(None, ge=0, le=1e11, allow_inf_nan=False)
    event_id: Text | None = None
    value: float | None = Field(None, allow_inf_nan=False, ge=-1e12, le=1e12)
    request_id: RequestId | None = Field(
        None, description="the recommendation response this event follows (its request_id)")


class FeedbackBody(Strict):
    """What a user did with a recommended item: linked to the response by its `request_id`
    and stored as an event of that response's user."""

    request_id: RequestId
    item: Id
    type: EventType = "click"
    timestamp: float | None = Field(None, ge=0, le=1e11, allow_inf_nan=False)
    event_id: Text | None = None
    value: float | None = Field(None, allow_inf_nan=False, ge=-1e12, le=1e12)


class EventBatch(Strict):
    events: list[EventBody] = Field(min_length=1)


class VisitorRequest(Strict):
    """An anonymous visitor: recommendations from a history sent with the request."""

    history: list[Id] = Field(default_factory=list, max_length=MAX_HISTORY,
                              description="item ids the visitor interacted with, oldest first")
    k: int = Field(10, ge=1, le=MAX_K)
    exclude_seen: bool = True
    filter: list[Filter] = Field(default_factory=list, max_length=16)
    diversity: float = Field(0.0, ge=0.0, le=1.0, allow_inf_nan=False)
    explain: bool = False
    candidates: list[Id] = Field(default_factory=list, max_length=MAX_CANDIDATES,
                                 description="only these items may be recommended (empty: any)")
    rerank: list[Annotated[str, StringConstraints(min_length=1, max_length=512)]] = Field(
        default_factory=list, max_length=MAX_RERANK, description=RERANK_HELP)


class ReloadRequest(Strict):
    bundle: Annotated[str, StringConstraints(min_length=1, max_length=4096,
                                             pattern=TEXT_PATTERN)] | None = Field(
        None, description="a bundle folder on the server; the current one when missing")


# --- responses ----------------------------------------------------------------------------
class ScoredItem(BaseModel):
    item: str | int
    score: float
    because: str | int | None = Field(
        None, description="with explain=true: the history item that most supports this one")
    reason: str | None = None


class Recommendations(BaseModel):
    user: str | int | None = Field(None, description="absent for an anonymous visitor")
    items: list[ScoredItem]
    model_version: str
    note: str | None = None
    request_id: str | None = Field(
        None, description="this response's id: send it back with the clicks, carts and "
        "purchases it leads to (POST /v1/feedback, or request_id on POST /v1/events); the "
        "impression is stored before the answer")
    arm: str | None = Field(None, description="the experiment arm that answered")


class SimilarItems(BaseModel):
    item: str | int
    items: list[ScoredItem]
    model_version: str


class IngestResponse(BaseModel):
    accepted: int = Field(description="events stored now (durable before this answer)")
    duplicates: int = Field(description="events whose (user, event_id) was already stored")
    unknown_items: int = Field(
        0, description="accepted events whose item is not in the served model's catalogue: "
        "stored all the same (a retrained model learns them), but no recommendation can use "
        "them until then")


class ForgetResponse(BaseModel):
    """The user's events and cached state are gone from the store; a training user's history,
    seen items and per-user learned rows are gone from the served bundle, whose id stays in
    the bundle's vocabulary, mapped to nothing, until retraining. Item-side parameters learned
    from the user's data (item factors, similarities, network weights) also stay until the
    model is retrained without them."""

    user: str | int
    events_deleted: int
    audit_id: int
    in_training_data: bool = Field(
        description="the served bundle held the user's training data before this request")
    redacted_from_model: bool = Field(
        description="the bundle served now holds no training history, seen items or per-user "
                    "learned rows of the user (redacted in memory and on disk)")
    model_version: str = Field(description="the bundle version served after this request "
                                           "(a new one when the bundle was redacted)")


class FeedbackResponse(BaseModel):
    accepted: int = Field(description="1 when stored now, 0 for a repeated event_id")
    user: str | int = Field(description="the user the feedback was stored for")


class ReloadResponse(BaseModel):
    model_version: str
    previous_version: str


class Health(BaseModel):
    status: str
    model_version: str | None = None
    detail: str | None = None


# --- experiments (GET /v1/experiments; built by lmrec.serve.experiments) --------------------
Interval = tuple[float, float]


class ArmStats(BaseModel):
    arm: str
    model_version: str
    share: float = Field(description="the share of users assigned to the arm")
    impressions: int = Field(description="recommendation responses served and logged")
    clicks: int = Field(description="distinct (response, shown item) pairs with feedback")
    ctr: float = Field(description="clicks per impression")
    ctr_ci: Interval = Field(description="95% confidence interval of ctr")
    conversions: int
    conversion_rate: float
    conversion_ci: Interval


class Comparison(BaseModel):
    control: str
    treatment: str
    ctr_diff: float = Field(description="treatment ctr - control ctr")
    ctr_diff_ci: Interval
    ctr_relative: float | None = Field(description="ctr_diff / control ctr")
    p_value: float = Field(description="two-sided (Welch) p-value of the ctr difference")
    conversion_diff: float
    conversion_diff_ci: Interval
    conversion_p_value: float
    significant: bool = Field(description="p_value < 0.05")


class Interleaving(BaseModel):
    arms: tuple[str, str]
    impressions: int
    wins: dict[str, int]
    ties: int
    preference: float = Field(description="(wins of the first - wins of the second) / "
                                          "impressions; > 0 favours the first arm")
    preference_ci: Interval
    p_value: float
    winner: str | None


class TimelinePoint(BaseModel):
    arm: str
    start: float = Field(description="bucket start, Unix seconds")
    impressions: int
    clicks: int
    ctr: float
    ctr_ci: Interval


class Experiments(BaseModel):
    mode: str = Field(description="single, ab or interleave")
    arms: list[ArmStats]
    comparison: Comparison | None = None
    interleaving: Interleaving | None = None
    timeline: list[TimelinePoint]
