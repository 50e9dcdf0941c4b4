# One image for every meterwatch service: compose picks the command (`meterwatch run`,
# `meterwatch api`, ...). Build: docker build -t meterwatch .
#
# Stage 1 builds the wheel from the sources; stage 2 installs it into a clean image and runs as
# an unprivileged user, so the image holds no build tools and no source tree.
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
# every package of [tool.hatch.build.targets.wheel] in pyproject.toml, and sql/
COPY meterwatch meterwatch
COPY stream stream
COPY detectors detectors
COPY simulator simulator
COPY api api
COPY dashboard dashboard
COPY alerts alerts
COPY billing billing
COPY bench bench
COPY sql sql
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .

FROM python:3.11-slim
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    DATA_DIR=/home/meterwatch/data
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl \
 && rm -rf /wheels \
 && useradd --create-home --uid 10001 meterwatch \
 && mkdir -p /home/meterwatch/data \
 && chown meterwatch:meterwatch /home/meterwatch/data
USER meterwatch
WORKDIR /home/meterwatch
# the API and the dashboard (compose publishes them; the other services listen on nothing)
EXPOSE 8000 8050
ENTRYPOINT ["meterwatch"]
CMD ["--help"]
