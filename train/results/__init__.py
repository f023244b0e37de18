"""Results pulled from rigs: reading a pulled folder (pulled) and the page a person reads (report, plots).
Apart from training: nothing here fits a model."""
