"""Prompt templates for LLM query generation, stored as YAML data files.

A template has ``name``, ``system``, ``user`` (placeholders ``{passage}``, ``{num_queries}``,
``{query_types}``), ``query_types`` (type name -> description, in mix order) and an optional
``assistant_prefix`` that backends able to prefill the reply start it with.

Example:
    >>> t = load_prompt_template()          # the bundled MedEmbed-style mix
    >>> t.name, list(t.query_types)
    ('medembed', ['keyword', 'question', 'treatment'])
    >>> msgs = t.messages("Metformin 500 mg twice daily was started.", ["keyword"])
    >>> "Metformin 500 mg" in msgs[-1]["content"]
    True
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from colmed.core.errors import InputError

DEFAULT_TEMPLATE = Path(__file__).with_name("medembed.yaml")
BUNDLED = tuple(sorted(p.stem for p in DEFAULT_TEMPLATE.parent.glob("*.yaml")))  # names --prompts accepts


@dataclass(frozen=True)
class PromptTemplate:
    """A loaded prompt template; :meth:`messages` renders one chat request."""

    name: str
    system: str
    user: str
    query_types: dict[str, str]
    assistant_prefix: str = ""
    description: str = ""
    # Asking for a copied evidence span makes replies several times longer; lean templates for small
    # CPU models turn it off (and lose the evidence-in-note hallucination filter).
    evidence: bool = True

    def messages(self, passage: str, types: list[str]) -> list[dict[str, str]]:
        listing = "\n".join(f"- {t}: {self.query_types[t]}" for t in types)
        # str.replace, not str.format: the JSON example in the template is full of braces.
        user = (self.user.replace("{passage}", passage).replace("{num_queries}", str(len(types)))
                .replace("{query_types}", listing))
        msgs = [{"role": "system", "content": self.system.strip()}] if self.system.strip() else []
        return msgs + [{"role": "user", "content": user.strip()}]

    def json_schema(self, num_queries: int) -> dict[str, Any]:
        """JSON schema of a valid reply, for backends with structured output (vLLM, OpenAI-compatible)."""
        item = {"type": "object", "additionalProperties": False,
                "properties": {"type": {"type": "string", "enum": list(self.query_types)},
                               "query": {"type": "string", "minLength": 1},
                               "relevance": {"type": "integer", "minimum": 1, "maximum": 5}},
                "required": ["type", "query", "relevance"]}
        if self.evidence:
            item["properties"]["evidence"] = {"type": "string", "minLength": 1}
            item["required"].insert(2, "evidence")
        return {"type": "object", "additionalProperties": False, "required": ["queries"],
                "properties": {"queries": {"type": "array", "items": item, "minItems": num_queries,
                                           "maxItems": num_queries}}}


def load_prompt_template(path: str | Path | None = None) -> PromptTemplate:
    """Load a template YAML, or a bundled one by name (``medembed``, the default, or ``medembed-lean``)."""
    import yaml

    if path is not None and str(path) in BUNDLED and not Path(path).exists():
        path = Path(__file__).with_name(f"{path}.yaml")
    path = Path(path) if path else DEFAULT_TEMPLATE
    if not path.is_file():
        raise InputError("prompt template not found", path=path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        raise InputError(f"malformed YAML ({getattr(e, 'problem', e)})", path=path,
                         line=mark.line + 1 if mark else None) from None
    if not isinstance(data, dict):
        raise InputError("expected a mapping", path=path)
    for key in ("user", "query_types"):
        if not data.get(key):
            raise InputError("missing", path=path, field=key)
    if "{passage}" not in data["user"]:
        raise InputError("must contain the {passage} placeholder", path=path, field="user")
    types = data["query_types"]
    if isinstance(types, list):
        types = {t: t for t in types}
    if not isinstance(types, dict):
        raise InputError("expected a mapping of type name -> description", path=path, field="query_types")
    return PromptTemplate(name=str(data.get("name") or path.stem), system=str(data.get("system") or ""),
                          user=str(data["user"]), query_types={str(k): str(v) for k, v in types.items()},
                          assistant_prefix=str(data.get("assistant_prefix") or ""),
                          description=str(data.get("description") or ""),
                          evidence=bool(data.get("evidence", True)))
