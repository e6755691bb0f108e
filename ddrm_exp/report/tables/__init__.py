"""One module per table, each defining ``SPEC`` (a :class:`ddrm_exp.report.spec.TableSpec`)
with its renderer and the report's numbers; the registry finds every module here."""
