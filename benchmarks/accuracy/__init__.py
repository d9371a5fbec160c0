"""The accuracy recipe: the paper's comparison as one command, for a lab that has the weights and the data."""
