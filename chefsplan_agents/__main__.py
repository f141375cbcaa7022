"""``python -m chefsplan_agents`` is the ``chefsplan`` command."""

from chefsplan_agents.cli import main

main()
