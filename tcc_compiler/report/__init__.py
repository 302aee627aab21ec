"""Human-readable reports of a compiled network (:mod:`tcc_compiler.report.html`)."""

from tcc_compiler.report.html import render_html, write_html  # noqa: F401
