"""End-to-end pipelines behind the ``storm-bt`` commands: the quickstart, the paper tables
(``evaluate``), the trading experiment, the HTML report and the regression golden values.

Each pipeline only composes the stages below it (data, workflows, factors, agents, bridge).
"""

__all__: list[str] = []
