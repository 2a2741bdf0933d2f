"""dsrlb.control: the control plane interfaces (docs/control.md).

protocol  newline-delimited JSON control protocol, Sans-I/O
commands  the command registry: parsing, help, completion, execution
server    the 0600 unix control socket (asyncio); client: the synchronous client for the CLI
http      the HTTP API and Prometheus /metrics (asyncio); metrics: the collector
views     result shapes of the show commands; render: their rich tables
"""
