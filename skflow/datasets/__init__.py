"""Small real tables that ship with skflow, for the examples and a first try.

Each loader returns the table as published, as a :class:`pandas.DataFrame`
(empty cells are NaN): mixed column types, integer columns, missing values.

========================  ==========  =====================================================
loader                    shape       source and licence
========================  ==========  =====================================================
:func:`load_penguins`     344 x 8     Palmer Station penguins (Gorman, Williams and Fraser
                                      2014), via the ``palmerpenguins`` package; CC0.
:func:`load_cars`         406 x 8     The auto-mpg data (UCI repository; Quinlan 1993), as
                                      distributed by ``vega_datasets`` (listed as public).
:func:`load_engel`        235 x 2     Engel's food expenditure data (Koenker and Bassett
                                      1982), via ``statsmodels.datasets.engel``; public domain.
========================  ==========  =====================================================
"""

from importlib import resources

import pandas as pd

__all__ = ["load_cars", "load_engel", "load_penguins"]


def _read(name):
    with resources.files(__name__).joinpath("data", f"{name}.csv").open("r", encoding="utf-8") as handle:
        return pd.read_csv(handle)


def load_penguins():
    """Palmer penguins: species, island and sex (strings), four body measurements, year.

    344 rows; 11 rows have empty cells (19 cells in all). Source: Gorman, Williams and
    Fraser (2014), Ecological sexual dimorphism and environmental variability within a
    community of Antarctic penguins, PLoS ONE 9(3); the ``palmerpenguins`` package. CC0.

    Returns
    -------
    frame : pandas.DataFrame of shape (344, 8)

    Examples
    --------
    >>> from skflow.datasets import load_penguins
    >>> load_penguins().shape
    (344, 8)
    """
    return _read("penguins")


def load_cars():
    """Fuel economy of 406 cars: miles per gallon, cylinders, displacement, horsepower, weight,
    acceleration, model year and origin (a string); 14 empty cells.

    Source: the auto-mpg data of the UCI repository (Quinlan 1993), via ``vega_datasets``.

    Returns
    -------
    frame : pandas.DataFrame of shape (406, 8)
    """
    return _read("cars")


def load_engel():
    """Engel's data: household income and food expenditure of 235 Belgian working-class
    households (1857); heteroscedastic, a classic conditional-density task (``foodexp`` given
    ``income``).

    Source: Koenker and Bassett (1982), via ``statsmodels.datasets.engel``.

    Returns
    -------
    frame : pandas.DataFrame of shape (235, 2)
    """
    return _read("engel")
