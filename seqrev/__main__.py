from seqrev.train import cli

cli()
