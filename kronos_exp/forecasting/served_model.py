"""The served predictor's model code (MLflow models-from-code): ``mlflow.pyfunc.save_model`` copies
this file into the package in place of a pickled model object, so loading a package unpickles nothing."""
import mlflow

from kronos_exp.forecasting.pyfunc import KronosForecaster

mlflow.models.set_model(KronosForecaster())
