"""The stages' runtime on Faust: compatibility with the pinned library."""
