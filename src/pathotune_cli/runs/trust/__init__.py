"""Trust: fitting the temperature, conformal quantiles and OOD statistics, applying and reporting them."""
