"""The console's pages: each handler calls the same functions as the JSON API (the
:class:`~..server.FleetServer` operations and :mod:`..views`) and renders a template.

Pages that change while a rollout or experiment runs have a ``panel`` partial that the page
polls with htmx (``hx-trigger="every 1s"``) until the rollout is over.
"""

from __future__ import annotations

import hmac
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlencode

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.templating import Jinja2Templates

from edgeserve.errors import ConfigError

from .. import api, views
from .. import experiments as ex
from ..rollout import ACTIONS, allowed_actions
from ..rollout.views import rollout_status
from .auth import FORM_MAX_BYTES, sign_in

if TYPE_CHECKING:
    from ..server import FleetServer

__all__ = ["Pages"]

TERMINAL = ("completed", "aborted", "rolled_back")
DEVICES_PER_PAGE = 100  # the fleet table pages; the summary counts every device


async def _form(request: Request) -> dict[str, str]:
    """An ``application/x-www-form-urlencoded`` body (what the console's forms send), at most
    :data:`FORM_MAX_BYTES`; a field given twice keeps its first value.

    Raises:
        ConfigError: the body is larger.
    """
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > FORM_MAX_BYTES:
            raise ConfigError(f"form over {FORM_MAX_BYTES} bytes")
    fields = parse_qs(body.decode("utf-8", "replace"), max_num_fields=32)
    return {k: v[0] for k, v in fields.items()}


def _int(value: str, what: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise ConfigError(f"{what}: {value!r} is not an integer") from None


class Pages:
    """The handlers of one console, bound to a fleet server and its templates."""

    def __init__(self, fs: FleetServer, templates: Jinja2Templates, mount: str) -> None:
        self.fs = fs
        self.templates = templates
        self.mount = mount

    def render(self, request: Request, name: str, status: int = 200, **context: Any) -> Response:
        """Render ``name`` with the session's CSRF token and the active page."""
        session = request.session
        context.setdefault("csrf", session.get("csrf", ""))
        context.setdefault("ui", self.mount)
        return self.templates.TemplateResponse(request, name, context, status_code=status)

    # -- sign-in ----------------------------------------------------------------------------

    def _next(self, request: Request, value: str | None) -> str:
        # only a path inside the console, never another site (no open redirect)
        if value and value.startswith(self.mount + "/") and not value.startswith("//"):
            return value
        return self.mount + "/"

    async def login_form(self, request: Request) -> Response:
        nxt = self._next(request, request.query_params.get("next"))
        return self.render(request, "login.html", next=nxt, error=None)

    async def login(self, request: Request) -> Response:
        form = await _form(request)
        token = str(form.get("token", ""))
        nxt = self._next(request, str(form.get("next", "")))
        expected = self.fs.config.server.token.encode()
        if not hmac.compare_digest(token.encode(), expected):
            return self.render(
                request, "login.html", status=401, next=nxt, error="wrong operator token"
            )
        sign_in(request.session)
        return RedirectResponse(nxt, status_code=303)

    async def logout(self, request: Request) -> Response:
        request.session.clear()
        return RedirectResponse(f"{self.mount}/login", status_code=303)

    # -- fleet ------------------------------------------------------------------------------

    async def _fleet(self, request: Request) -> dict[str, Any]:
        tag = request.query_params.get("tag", "")
        state = request.query_params.get("state", "")
        tags = api.selector(tag, "tag")
        page = max(1, _int(request.query_params.get("page", "1") or "1", "page"))
        devices = await run_in_threadpool(self.fs.device_list)
        matching = views.filter_devices(devices, tags, state)
        first = (page - 1) * DEVICES_PER_PAGE
        return {
            "summary": views.fleet_summary(devices),
            "devices": matching[first : first + DEVICES_PER_PAGE],
            "matching": len(matching),
            "first": first,
            "page_no": page,
            "more": first + DEVICES_PER_PAGE < len(matching),
            "tag": tag,
            "state": state,
            "query": str(request.query_params),
            "filters": urlencode({k: v for k, v in (("tag", tag), ("state", state)) if v}),
        }

    async def fleet(self, request: Request) -> Response:
        return self.render(request, "fleet.html", page="fleet", **await self._fleet(request))

    async def fleet_panel(self, request: Request) -> Response:
        return self.render(request, "_fleet.html", **await self._fleet(request))

    async def device(self, request: Request) -> Response:
        device = request.path_params["device"]
        detail = await run_in_threadpool(views.device_detail, self.fs.store, device)
        return self.render(request, "device.html", page="fleet", d=detail)

    # -- releases ---------------------------------------------------------------------------

    async def releases(self, request: Request) -> Response:
        rows = await run_in_threadpool(views.release_details, self.fs.store)
        return self.render(request, "releases.html", page="releases", releases=rows)

    # -- rollouts ---------------------------------------------------------------------------

    async def rollouts(self, request: Request) -> Response:
        rows = await run_in_threadpool(self.fs.rollout_list)
        return self.render(request, "rollouts.html", page="rollouts", rollouts=rows)

    async def rollouts_panel(self, request: Request) -> Response:
        rows = await run_in_threadpool(self.fs.rollout_list)
        return self.render(request, "_rollouts.html", rollouts=rows)

    async def _rollout(self, request: Request) -> dict[str, Any]:
        rid = _int(request.path_params["id"], "rollout id")
        st = await run_in_threadpool(rollout_status, self.fs.store, rid)
        live = st["status"] not in TERMINAL
        return {"r": st, "live": live, "actions": allowed_actions(st["status"])}

    async def rollout(self, request: Request) -> Response:
        ctx = await self._rollout(request)
        return self.render(request, "rollout.html", page="rollouts", **ctx)

    async def rollout_panel(self, request: Request) -> Response:
        return self.render(request, "_rollout.html", **await self._rollout(request))

    def _action(self, request: Request) -> tuple[int, str]:
        rid = _int(request.path_params["id"], "rollout id")
        action = request.path_params["action"]
        if action not in ACTIONS:
            raise ConfigError(f"unknown action {action!r}; use one of {', '.join(ACTIONS)}")
        return rid, action

    async def confirm_action(self, request: Request) -> Response:
        rid, action = self._action(request)
        st = await run_in_threadpool(rollout_status, self.fs.store, rid)
        return self.render(
            request,
            "confirm.html",
            page="rollouts",
            title=f"{action.capitalize()} rollout {rid}?",
            what=f"{action} rollout {rid} ({st['model']} v{st['version']}, now {st['status']})",
            action=f"{self.mount}/rollouts/{rid}/{action}",
            cancel=f"{self.mount}/rollouts/{rid}",
            button=action.capitalize(),
            reason=True,
        )

    async def do_action(self, request: Request) -> Response:
        rid, action = self._action(request)
        form = await _form(request)
        reason = str(form.get("reason") or "").strip() or "operator request (console)"
        await run_in_threadpool(self.fs.rollout_action, rid, action, reason[:500])
        return RedirectResponse(f"{self.mount}/rollouts/{rid}", status_code=303)

    # -- experiments ------------------------------------------------------------------------

    async def experiments(self, request: Request) -> Response:
        rows = await run_in_threadpool(self.fs.experiment_list)
        return self.render(request, "experiments.html", page="experiments", experiments=rows)

    async def _experiment(self, request: Request) -> dict[str, Any]:
        eid = _int(request.path_params["id"], "experiment id")
        text = request.query_params.get("min_effect")
        effect = api.min_effect(text) if text else None
        rep = await run_in_threadpool(lambda: ex.report(self.fs.store, eid, min_effect=effect))
        return {"e": rep, "eid": eid, "live": rep["experiment"]["status"] == "running"}

    async def experiment(self, request: Request) -> Response:
        ctx = await self._experiment(request)
        return self.render(request, "experiment.html", page="experiments", **ctx)

    async def experiment_panel(self, request: Request) -> Response:
        return self.render(request, "_experiment.html", **await self._experiment(request))

    async def experiment_series(self, request: Request) -> Response:
        eid = _int(request.path_params["id"], "experiment id")
        return JSONResponse(await run_in_threadpool(views.experiment_series, self.fs.store, eid))

    async def confirm_promote(self, request: Request) -> Response:
        ctx = await self._experiment(request)
        e, eid = ctx["e"], ctx["eid"]
        return self.render(
            request,
            "confirm.html",
            page="experiments",
            title=f"Promote the winner of experiment {eid}?",
            what=f"end experiment {eid} ({e['verdict']}: {e['why']}) and roll the winner out "
            "to its devices",
            action=f"{self.mount}/experiments/{eid}/promote",
            cancel=f"{self.mount}/experiments/{eid}",
            button="Promote",
            reason=False,
        )

    async def promote(self, request: Request) -> Response:
        eid = _int(request.path_params["id"], "experiment id")
        rid = await run_in_threadpool(self.fs.promote_experiment, eid, None)
        return RedirectResponse(f"{self.mount}/rollouts/{rid}", status_code=303)

    # -- audit ------------------------------------------------------------------------------

    async def audit(self, request: Request) -> Response:
        subject = request.query_params.get("subject", "").strip()
        action = request.query_params.get("action", "").strip()
        limit = _int(request.query_params.get("limit", "200") or "200", "limit")
        if not 0 < limit <= 10_000:
            raise ConfigError("limit: between 1 and 10000")
        entries = await run_in_threadpool(
            lambda: self.fs.store.audit_entries(subject or None, limit, action or None)
        )
        return self.render(
            request,
            "audit.html",
            page="audit",
            entries=entries,
            subject=subject,
            action=action,
            limit=limit,
        )
