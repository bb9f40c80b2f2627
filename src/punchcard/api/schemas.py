"""Request bodies, for validation at the edge and for the published OpenAPI document.

Money is a decimal string ("9.50"); numbers are accepted and read from their text.
The service layer parses these again into its own values, so the rules live once.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import (
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    WithJsonSchema,
    field_validator,
)

from punchcard import names
from punchcard.services.inputs import read_time

# Strict: JSON `true` is not 1.00, and "5" is not a quantity (lax Pydantic would take both).
Money = StrictStr | StrictInt | StrictFloat


def _name(value: Any) -> Any:
    # Ids written as whole numbers (a POS's order 1001) mean the same as their text, as in process.
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if isinstance(value, str):
        if "/" in value:
            raise ValueError("a name has no /")
        return _label(value)
    return value


def _label(value: Any) -> Any:
    # One rule for every name, here and in process (services/inputs.py `as_name`): see names.py.
    if isinstance(value, str):
        wrong = names.problem(value)
        if wrong is not None:
            raise ValueError(wrong)
        return names.normal(value)
    return value


# Declared as text or a whole number, as it is read: a client that sends 1001 is not wrong.
Name = Annotated[
    str,
    BeforeValidator(_name),
    Field(min_length=1, max_length=200),
    WithJsonSchema(
        {"anyOf": [{"type": "string", "minLength": 1, "maxLength": 200}, {"type": "integer"}]}
    ),
]


def _time_text(value: Any) -> Any:
    # Read here, as in process: lax Pydantic would read 212 or "1700000000" as seconds after
    # 1970, and "20260303" as one too. A time must be written out, with its offset.
    return read_time(value)


When = Annotated[AwareDatetime, BeforeValidator(_time_text)]

# The years times may fall in (services/inputs.py `parse_time`, the sandbox clock's limit).
EARLIEST = datetime(1900, 1, 1, tzinfo=UTC)
AFTER_LATEST = datetime(9001, 1, 1, tzinfo=UTC)
# A time within those years, judged in UTC: one near year 1 or 9999 in its own offset
# (`9999-12-31T23:59:59-14:00`) overflows when it is stored or added to.
Bounded = Annotated[When, Field(ge=EARLIEST, lt=AFTER_LATEST)]


def _has_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, list | tuple):
        return any(_has_nul(v) for v in value)
    return False


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid")

    @field_validator("*", mode="after")
    @classmethod
    def _no_nul(cls, value: Any) -> Any:
        # PostgreSQL text can not hold NUL, and no field here has a use for one: refused at the edge.
        if _has_nul(value):
            raise ValueError("must not contain the NUL character (\\u0000)")
        return value


class EnrollBody(Body):
    id: Name = Field(min_length=1, max_length=200, description="Your id for the member")
    card_number: str | None = None
    email: str | None = None
    phone: str | None = None


class ModifierBody(Body):
    sku: Name
    category: Name
    qty: StrictInt = 1
    unit_price: Money


class LineBody(Body):
    id: Name
    sku: Name
    category: Name
    qty: StrictInt
    unit_price: Money
    modifiers: list[ModifierBody] = []
    kind: Literal["item", "gift_card"] = "item"


class DiscountBody(Body):
    amount: Money
    line: Name | None = None


class TenderBody(Body):
    type: Name
    amount: Money
    gift_card: Name | None = None


class OrderParts(Body):
    lines: list[LineBody] | None = None
    discounts: list[DiscountBody] | None = None
    tax: Money | None = None
    tip: Money | None = None
    fees: Money | None = None
    tenders: list[TenderBody] | None = None
    rewards: list[Name] | None = Field(None, description="Reward aliases or reward ids to apply")


class OrderBody(OrderParts):
    id: Name = Field(min_length=1, max_length=200)
    member: Name
    at: When | None = Field(None, description="Placed time; default now")
    status: Literal["open", "closed"] = "closed"
    lines: list[LineBody]


class RefundLine(Body):
    line: Name
    # Bounded here so a malformed quantity is answered before the order's state is (precedence).
    qty: StrictInt = Field(gt=0, le=1_000_000)


class RefundBody(Body):
    lines: list[RefundLine] | None = None
    all: StrictBool = False


class RedeemBody(Body):
    reward: Name
    alias: Name | None = None


class GiftCardBody(Body):
    amount: Money
    id: Name | None = Field(None, description="Your id for the card; default: generated")


class AmountBody(Body):
    amount: Money
    partial: StrictBool = False


class HoldBody(AmountBody):
    id: Name | None = Field(None, description="Your id for the hold; default: generated")


class CardTransferBody(Body):
    to: Name = Field(description="The card that receives the money (same currency)")
    amount: Money


class PointsTransferBody(Body):
    to: Name = Field(description="The member who receives the points")
    points: StrictInt = Field(gt=0, le=10**12, description="Posted points to move")


class CaptureBody(Body):
    amount: Money | None = None


class InquiryBody(Body):
    number: str
    pin: str


class ProgramBody(Body):
    source: str = Field(description="The program document, YAML or JSON text")
    live_from: Bounded | None = Field(None, description="Default: now. Null with activate=false")
    activate: StrictBool = True


class ActivateBody(Body):
    at: Bounded | None = None


class SandboxBody(Body):
    name: Annotated[str, BeforeValidator(_label)] = Field(min_length=1, max_length=200)
    # Bounded as order times are (1900 to 9000): dates near year 1 or 9999 overflow the
    # clock's arithmetic (a tier window's end, a hold's expiry) on the sandbox's first use.
    start: When = Field(
        ge=EARLIEST,
        lt=AFTER_LATEST,
        description="The sandbox clock's first time: from 1900-01-01 to before 9001-01-01 (UTC)",
    )
    copy_programs: StrictBool = Field(
        True, description="Start with this environment's program versions"
    )


class ClockBody(Body):
    to: Bounded | None = None
    advance: str | None = Field(None, description="A duration: PT1H, P1D, 15m, 30d")


class EndpointBody(Body):
    url: str
    event_types: list[str] | None = Field(None, description="Event types to send; none: every type")


class EndpointPatch(Body):
    url: str | None = None
    event_types: list[str] | None = None
    enabled: StrictBool | None = None


class RecoverBody(Body):
    since: Bounded


class SourceBody(Body):
    mapping: str = Field("generic", description="The source's event format")
