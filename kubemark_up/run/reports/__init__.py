"""What a run shows and leaves: the live view, the summary table, one JSON file per
measurement and the HTML report; and compare, which reads two such folders."""
