"""Adapters for agent frameworks: each maps Countersign's decisions onto the framework's own approval mechanism.

- ``countersign.adapters.openai_agents``: the OpenAI Agents SDK's tool approvals (``needs_approval``).
- ``countersign.adapters.langgraph``: LangGraph's ``interrupt`` and ``Command(resume=...)``.
- ``countersign.adapters.pydantic_ai``: PydanticAI's approval-required (deferred) tools.

In each, the tool's body runs under the grant, with the approved arguments (a reviewer's edit included),
and its outcome is reported; a rejection reaches the model as the reviewer's reason.
"""
