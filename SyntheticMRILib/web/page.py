"""The web app's page: Vuetify controls in a drawer beside trame-slicer's view grid, bound to the app's state.

Widgets carry class names (``te``, ``run-segment``, ``structure``, ...) that the browser tests and the benchmark
use. Uploads do not travel through the trame state (a websocket message held whole in memory): the page POSTs
each chosen file to the app's upload route, which streams it to disk within the size limit, then tells the app.
"""
from __future__ import annotations

from trame.ui.vuetify3 import SinglePageWithDrawerLayout
from trame.widgets import html
from trame.widgets import vuetify3 as v3

from ..io.maps import MAP_NAMES
from ..physics.protocols import PARAMETERS
from .session import UPLOAD_EXTENSIONS

__all__ = ["build_page", "UPLOAD_ROUTE", "MAP_TITLES"]

UPLOAD_ROUTE = "upload"  # POST upload/<map>?name=<the browser's file name>: the body is the file
MAP_TITLES = {"t1": "T1 map", "t2": "T2 map", "pd": "PD map"}
_LABELS = {"tr": "TR (ms)", "te": "TE (ms)", "ti": "TI (ms)", "ti2": "TI2 (ms)", "flip": "Flip angle (°)"}
_JOBS = {"segment": "Segment", "contrast": "Optimized contrast"}


def build_page(app) -> None:
    """The page of ``app`` (a :class:`~SyntheticMRILib.web.app.WebApp`)."""
    with SinglePageWithDrawerLayout(app.server, full_height=True) as page:
        page.title.set_text("SyntheticMRI")
        with page.toolbar:
            v3.VSpacer()
            html.Div("{{ status }} · {{ synth_ms }} ms · preview {{ preview_ms }} ms", classes="status text-caption mr-4")
        with page.drawer as drawer:
            drawer.width = 360
            v3.VAlert(v_if=("error",), text=("error",), type="error", density="compact", classes="error ma-2",
                      closable=True, click_close="error = ''")
            _maps(app)
            _contrast(app)
            _jobs(app)
            _downloads()
        with page.content:
            app.layouts.initialize_layout_grid(page)


def _upload_script(name: str) -> str:
    """Send the chosen file to the upload route, clear the field, and tell the app how it went."""
    return (f"(file => file && utils.get('fetch')('{UPLOAD_ROUTE}/{name}?name=' + encodeURIComponent(file.name), "
            f"{{method: 'POST', body: file}}).then(r => r.text().then(text => trigger('uploaded', ['{name}', r.ok, text])))"
            f".catch(e => trigger('uploaded', ['{name}', false, file.name + ': ' + e]))"
            f".finally(() => {{ upload_{name} = null; }}))(Array.isArray($event) ? $event[0] : $event)")


def _maps(app) -> None:
    busy = ("job !== ''",)  # results belong to the maps they were made from: no new maps meanwhile
    v3.VListSubheader("Maps")
    v3.VSelect(v_model=("source",), items=("sources",), label="Maps", classes="source mx-2", density="compact",
               disabled=busy)
    v3.VSelect(v_model=("units",), items=("unit_items",), label="T1/T2 units", classes="units mx-2", density="compact",
               disabled=busy)
    formats = ", ".join(UPLOAD_EXTENSIONS)
    for name in MAP_NAMES:
        app.state.client_only(f"upload_{name}")  # the File object stays in the browser
        v3.VFileInput(v_model=(f"upload_{name}", None), label=f"Upload {MAP_TITLES[name]} ({formats})", disabled=busy,
                      classes=f"upload-{name} mx-2", density="compact", show_size=True, prepend_icon="",
                      update_modelValue=_upload_script(name))
    html.Div("{{ upload_text }}", v_show=("upload_text",), classes="upload-text text-caption mx-3")


def _contrast(app) -> None:
    v3.VListSubheader("Contrast")
    v3.VSelect(v_model=("contrast",), items=("contrasts",), label="Contrast", classes="contrast mx-2", density="compact")
    html.Div("{{ description }}", classes="description text-caption mx-3 mb-2")
    for name in PARAMETERS:
        shown = (f"{name!r} === 'tr' || {name!r} === 'te' || needs.includes({name!r})",)
        v3.VSlider(v_model=(name,), min=(f"{name}_min",), max=(f"{name}_max",), step=1, label=_LABELS[name],
                   thumb_label=True, hide_details=True, classes=f"{name} mx-2", v_show=shown,
                   end=(app.release, f"[{name!r}, $event]"))
        html.Div(f"{{{{ {name} }}}}", v_show=shown, classes=f"{name}-value text-caption mx-4 mb-1 text-right")
    v3.VBtn("Synthesize", click=app.synthesize, classes="synthesize ma-2", size="small")


def _jobs(app) -> None:
    v3.VListSubheader("Segmentation and learned contrasts")
    with html.Div(classes="d-flex flex-wrap ga-2 mx-2"):
        for command, title in _JOBS.items():
            v3.VBtn(title, click=(app.run_job, f"[{command!r}]"), disabled=("job !== ''",), size="small",
                    classes=f"run-{command}")
        v3.VBtn("Cancel", click=app.cancel_job, disabled=("job === ''",), size="small", classes="cancel")
    v3.VProgressLinear(v_show=("job !== ''",), model_value=("job_total ? 100 * job_done / job_total : 0",),
                       indeterminate=("job !== '' && !job_total",), classes="job-progress mx-2 my-1")
    html.Div("{{ job_text }}", classes="job-text text-caption mx-3")
    with v3.VTable(v_show=("structures.length",), density="compact", classes="structures mx-2"):
        with html.Thead():
            with html.Tr():
                html.Th("Structure")
                html.Th("ml", classes="text-right")
        with html.Tbody():
            with html.Tr(v_for="row in structures", key="row.name", classes="structure"):
                with html.Td():
                    html.Span(style=("`display:inline-block;width:10px;height:10px;margin-right:6px;background:${row.colour}`",))
                    html.Span("{{ row.name }}")
                html.Td("{{ row.ml.toFixed(2) }}", classes="text-right")
    with v3.VList(v_show=("learned.length",), density="compact", classes="learned mx-2"):
        v3.VListItem(v_for="row in learned", key="row.key", title=("row.name",), click=(app.show_result, "[row.key]"),
                     classes="learned-contrast")


def _downloads() -> None:
    v3.VListSubheader("Download")
    with html.Div(classes="downloads mx-2"):
        v3.VBtn("{{ item.file }}", v_for="item in downloads", key="item.key", size="x-small", variant="tonal",
                classes="download ma-1 text-none",
                click="utils.download(item.file, trigger('download', [item.key, "
                      "{contrast, tr, te, ti, ti2, flip, rev: values_rev}]), 'application/octet-stream')")
