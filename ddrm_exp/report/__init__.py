"""Tables from run directories, never from a tracking server.

``records`` reads what the runner writes (its schema, shared with the writers); ``cells`` groups
records into cells that never pool different settings; ``spec`` is what a table is plus the
registry of ``tables/*`` (one module per table, holding its renderer and the report's numbers);
``render`` and ``comparison`` hold the shared layouts; ``write`` renders and writes one table.
"""

from ddrm_exp.report.cells import MixedSettingsError, group
from ddrm_exp.report.records import Record, ResultLine, RunSummary, load_records
from ddrm_exp.report.spec import TableResult, TableSpec, auto_table, get_spec, specs
from ddrm_exp.report.write import NoResultsError, build_table, plot_curves, write_table

__all__ = [
    "MixedSettingsError",
    "NoResultsError",
    "Record",
    "ResultLine",
    "RunSummary",
    "TableResult",
    "TableSpec",
    "auto_table",
    "build_table",
    "get_spec",
    "group",
    "load_records",
    "plot_curves",
    "specs",
    "write_table",
]
