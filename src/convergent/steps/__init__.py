"""One small script per Snakemake rule: parse the rule's inputs and params, call the library,
write the outputs. Run by Snakemake's ``script:`` directive; tests call each ``main`` directly."""
