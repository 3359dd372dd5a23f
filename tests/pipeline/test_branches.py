"""pipeline/branches.py: ``JoinBranches``, the one last step that depends on every branch."""

import apache_beam as beam
from apache_beam.testing import test_pipeline
from apache_beam.testing.util import assert_that, equal_to

from pipeline.branches import JoinBranches


def _sorted_values(joined):
    return {name: sorted(values) for name, values in joined.items()}


def test_join_branches_gives_every_branch_in_one_element_an_empty_one_too():
    with test_pipeline.TestPipeline(argv=["--runner=DirectRunner"]) as p:
        numbers = p | "Numbers" >> beam.Create([3, 1, 2])
        joined = (
            {
                "squares": numbers | "Square" >> beam.Map(lambda x: x * x),
                "total": numbers | "Total" >> beam.CombineGlobally(sum),
                "none": numbers | "NoneOfThem" >> beam.Filter(lambda x: x > 10),
            }
            | "Join" >> JoinBranches()
            | "Sorted" >> beam.Map(_sorted_values)
        )
        assert_that(joined, equal_to([{"squares": [1, 4, 9], "total": [6], "none": []}]))
