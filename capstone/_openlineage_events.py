"""The OpenLineage events of one run, built and sent with the official client.

Imported only when OpenLineage is configured (`capstone.openlineage.run_events`): importing it
imports the client.
"""

import logging
import os
import sys
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from functools import cache
from importlib.metadata import version

import attr
from openlineage.client import OpenLineageClient
from openlineage.client.event_v2 import (
    InputDataset,
    Job,
    OutputDataset,
    Run,
    RunEvent,
    RunState,
)
from openlineage.client.facet_v2 import (
    DatasetFacet,
    InputDatasetFacet,
    OutputDatasetFacet,
    RunFacet,
    data_quality_metrics_dataset,
    error_message_run,
    input_statistics_input_dataset,
    job_type_job,
    output_statistics_output_dataset,
    processing_engine_run,
    schema_dataset,
)

from capstone import __version__
from capstone.openlineage import Warn
from capstone.sources import SourceFile
from capstone.spec import PipelineSpec
from capstone.store import Store
from capstone.summary import RunSummary

__all__ = ["PRODUCER", "ClientEvents"]

PRODUCER = f"urn:capstone:{__version__}"
"""Who wrote the events: capstone and its version (a URI, as the spec asks)."""
_FACETS = f"urn:capstone:{__version__}:facets"
"""Where capstone's own facets are defined; README.md ("Operating capstone") lists their fields."""

_CLIENT_VERSION = version("openlineage-python")

_CLOSE_SECONDS = 10.0
"""How long the end of a run waits for a transport that sends in the background."""


@attr.define
class CapstoneRunFacet(RunFacet):
    """The run as capstone's run log knows it: `capstone runs RUN_LOG_ID` shows it."""

    runLogId: int  # the spec's field names are camelCase
    source: str | None = None
    status: str | None = None
    counts: dict[str, int] | None = None

    @staticmethod
    def _get_schema() -> str:
        return f"{_FACETS}#/$defs/CapstoneRunFacet"


@attr.define
class CapstoneRejectsFacet(DatasetFacet):
    """The records a run did not load into the dataset, by fate, and its rejects by reason."""

    inputRecords: int
    rejected: int
    stale: int
    skipped: int
    deadLetters: int
    rejectsByReason: dict[str, int]

    @staticmethod
    def _get_schema() -> str:
        return f"{_FACETS}#/$defs/CapstoneRejectsFacet"


_COUNTS = (
    "input_records",
    "staged",
    "loaded",
    "late",
    "deleted",
    "stale",
    "rejected",
    "skipped",
    "dead_letters",
    "dead_letters_updated",
    "lineage_entries",
)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class ClientEvents:
    """The events of one run through an `OpenLineageClient` configured from the environment."""

    def __init__(self, warn: Warn, namespace: str) -> None:
        self._warn = warn
        self._namespace = namespace
        self._warned = False
        self._ended = False
        self._job: Job | None = None
        self._inputs: list[InputDataset] = []
        self._output: OutputDataset | None = None
        self._source: SourceFile | None = None
        _quiet_client_logs()
        added = set(os.environ)
        try:
            self._client = OpenLineageClient()
        finally:
            # The client turns OPENLINEAGE_URL into OPENLINEAGE__ variables of this process; a
            # library should leave its caller's environment as it found it.
            for name in set(os.environ) - added:
                del os.environ[name]

    # -- the pipeline's calls -------------------------------------------------------------------

    def start(
        self, run: RunSummary, spec: PipelineSpec, source: SourceFile | None, store: Store
    ) -> None:
        self._guarded(self._start, run, spec, source, store)

    def complete(self, summary: RunSummary, reasons: Mapping[str, int]) -> None:
        self._end(RunState.COMPLETE, summary, reasons=reasons)

    def fail(self, run: RunSummary, error: str) -> None:
        self._end(RunState.FAIL, run, error=error)

    def abort(self, run: RunSummary) -> None:
        self._end(RunState.ABORT, run)

    # -- building -------------------------------------------------------------------------------

    def _start(
        self, run: RunSummary, spec: PipelineSpec, source: SourceFile | None, store: Store
    ) -> None:
        self._job = Job(
            namespace=self._namespace,
            name=spec.name,
            facets={
                "jobType": job_type_job.JobTypeJobFacet(
                    processingType="BATCH",
                    integration="CAPSTONE",
                    jobType="LOAD",
                    producer=PRODUCER,
                )
            },
        )
        self._source = source
        if source is not None:
            self._inputs = [InputDataset(namespace="file", name=_file_name(source))]
        else:  # a replay or a dismissal reads the pipeline's dead letters
            namespace, name = store.dataset("dead_letters")
            self._inputs = [InputDataset(namespace=namespace, name=name)]
        namespace, name = store.dataset(spec.target)
        self._output = OutputDataset(
            namespace=namespace, name=name, facets={"schema": _schema(spec, store)}
        )
        self._send(RunState.START, run, {}, self._inputs, [self._output])

    def _end(
        self,
        state: RunState,
        run: RunSummary,
        *,
        reasons: Mapping[str, int] | None = None,
        error: str | None = None,
    ) -> None:
        if self._ended:
            return
        self._ended = True
        self._guarded(self._finish, state, run, reasons, error)
        try:
            self._client.close(_CLOSE_SECONDS)
        except Exception as failure:
            self._warn_once(failure)

    def _finish(
        self,
        state: RunState,
        run: RunSummary,
        reasons: Mapping[str, int] | None,
        error: str | None,
    ) -> None:
        facets: dict[str, RunFacet] = {}
        if error is not None:
            facets["errorMessage"] = error_message_run.ErrorMessageRunFacet(
                message=error, programmingLanguage="python", producer=PRODUCER
            )
        inputs, outputs = self._inputs, [self._output] if self._output else []
        if state == RunState.COMPLETE and self._output is not None:
            inputs = [self._with_statistics(dataset, run) for dataset in inputs]
            outputs = [_with_results(self._output, run, reasons or {})]
        self._send(state, run, facets, inputs, outputs)

    def _with_statistics(self, dataset: InputDataset, run: RunSummary) -> InputDataset:
        size = None
        if self._source is not None and self._source.path != "-":
            size = _size(self._source)
        facets: dict[str, InputDatasetFacet] = {
            "inputStatistics": input_statistics_input_dataset.InputStatisticsInputDatasetFacet(
                rowCount=run.input_records, size=size, producer=PRODUCER
            )
        }
        return InputDataset(
            namespace=dataset.namespace,
            name=dataset.name,
            facets=dataset.facets,
            inputFacets=facets,
        )

    def _send(
        self,
        state: RunState,
        run: RunSummary,
        facets: dict[str, RunFacet],
        inputs: list[InputDataset],
        outputs: list[OutputDataset],
    ) -> None:
        if self._job is None or run.run_uuid is None:
            return  # START could not be built: an end alone would say nothing consistent
        facets["processing_engine"] = processing_engine_run.ProcessingEngineRunFacet(
            version=__version__,
            name="capstone",
            openlineageAdapterVersion=_CLIENT_VERSION,
            producer=PRODUCER,
        )
        facets["capstone_run"] = CapstoneRunFacet(
            runLogId=run.run_id,
            source=run.source,
            status=run.status,
            counts=None if state == RunState.START else {n: getattr(run, n) for n in _COUNTS},
            producer=PRODUCER,
        )
        self._client.emit(
            RunEvent(
                eventType=state,
                eventTime=_now(),
                run=Run(runId=run.run_uuid, facets=facets),
                job=self._job,
                inputs=inputs,
                outputs=outputs,
                producer=PRODUCER,
            )
        )

    # -- never failing a run --------------------------------------------------------------------

    def _guarded(self, step: Callable[..., None], *args: object) -> None:
        try:
            step(*args)
        except Exception as error:
            self._warn_once(error)

    def _warn_once(self, error: Exception) -> None:
        if self._warned:
            return
        self._warned = True
        reason = " ".join(str(error).split()) or type(error).__name__
        self._warn(f"an OpenLineage event could not be sent ({reason}); the run is unaffected")


def _file_name(source: SourceFile) -> str:
    return "<stdin>" if source.path == "-" else os.path.abspath(source.path)


def _size(source: SourceFile) -> int | None:
    try:
        return source.size
    except OSError:
        return None


def _schema(spec: PipelineSpec, store: Store) -> schema_dataset.SchemaDatasetFacet:
    """The target table's columns: the pipeline's fields, then the ones capstone adds."""
    types, words = store.dialect.types, store.dialect.words
    columns = [(name, types[field.type]) for name, field in spec.fields.items()]
    columns += [("attributes", types["json"]), ("run_id", words["bigint"])]
    return schema_dataset.SchemaDatasetFacet(
        fields=[
            schema_dataset.SchemaDatasetFacetFields(name=name, type=kind, ordinal_position=n)
            for n, (name, kind) in enumerate(columns, 1)
        ],
        producer=PRODUCER,
    )


def _with_results(
    output: OutputDataset, run: RunSummary, reasons: Mapping[str, int]
) -> OutputDataset:
    facets: dict[str, DatasetFacet] = dict(output.facets or {})
    facets["dataQualityMetrics"] = data_quality_metrics_dataset.DataQualityMetricsDatasetFacet(
        columnMetrics={}, rowCount=run.input_records, producer=PRODUCER
    )
    facets["capstone_rejects"] = CapstoneRejectsFacet(
        inputRecords=run.input_records,
        rejected=run.rejected,
        stale=run.stale,
        skipped=run.skipped,
        deadLetters=run.dead_letters,
        rejectsByReason=dict(sorted(reasons.items())),
        producer=PRODUCER,
    )
    output_facets: dict[str, OutputDatasetFacet] = {
        "outputStatistics": output_statistics_output_dataset.OutputStatisticsOutputDatasetFacet(
            rowCount=run.loaded, producer=PRODUCER
        )
    }
    return OutputDataset(
        namespace=output.namespace, name=output.name, facets=facets, outputFacets=output_facets
    )


class _Stderr(logging.Handler):
    """Each record as one line on the stderr of the moment (tests and CLIs swap it)."""

    def emit(self, record: logging.LogRecord) -> None:
        sys.stderr.write(self.format(record) + "\n")


@cache
def _quiet_client_logs() -> None:
    """Keep the client's own log lines (retries, failed transports) off stderr unless logging is
    configured: a failure is capstone's one warning line. The console transport's events go to
    stderr, since that transport is chosen to see them; stdout is the run's summary."""
    logging.getLogger("openlineage").addHandler(logging.NullHandler())
    console = logging.getLogger("openlineage.client.transport.console")
    console.addHandler(_Stderr())
    console.setLevel(logging.INFO)
    console.propagate = False
