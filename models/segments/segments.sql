{{ config(materialized='table', tags=['segments']) }}
{%- set method = var('segmentation.method', 'rules') %}

-- One row per customer: the segment chosen by vars.segmentation.method (rules | kmeans).
{% if method == 'kmeans' %}
select customer_id, segment_id, segment_name, segment_description
from {{ ref('segments_kmeans') }}
{% elif method == 'rules' %}
select customer_id, segment_id, segment_name, segment_description
from {{ ref('segments_rules') }}
{% else %}
select error('cpo.yml: vars.segmentation.method is {{ method | replace("'", "''") }}; set it to rules or kmeans')
{% endif %}
