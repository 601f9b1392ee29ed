// An Azure Monitor workbook charting what profilesync does over time: its runs
// and import jobs, from the profilesync.run and profilesync.job events the
// handler writes to stdout and the Functions host forwards to Application
// Insights as traces (README, "Metrics").
//
// Each chart's query is a file in infra/workbook/, loaded here and shown as
// is in the README; handler/workbook_test.go keeps the two equal, checks that
// the queries read only documented fields, and reads `content` below as ARM
// serializes it (string()) to check that it is a workbook.

@description('Name of the Application Insights resource whose traces the workbook charts.')
param applicationInsightsName string

@description('Azure region.')
param location string

@description('Tags of the workbook.')
param tags object = {}

@description('Name of the workbook in the portal.')
param displayName string = 'profilesync'

resource appInsights 'Microsoft.Insights/components@2020-02-02' existing = {
  name: applicationInsightsName
}

// The workbook (Notebook/1.0): a time range picker and one KQL item per
// chart, each run over the Application Insights resource for that range.
var content = {
  version: 'Notebook/1.0'
  items: [
    {
      type: 1
      name: 'intro'
      content: {
        json: '## profilesync\nRuns and import jobs, from the `profilesync.run` and `profilesync.job` events the handler logs (one per run, one per finished job). README, section Metrics, lists their fields.'
      }
    }
    {
      type: 9
      name: 'parameters'
      content: {
        version: 'KqlParameterItem/1.0'
        parameters: [
          {
            id: '6f0b3c4e-2d7a-4b8e-9a51-3c2e7d4f8a10'
            version: 'KqlParameterItem/1.0'
            name: 'TimeRange'
            label: 'Time range'
            type: 4
            isRequired: true
            value: {
              durationMs: 2592000000
            }
            typeSettings: {
              selectableValues: [
                {
                  durationMs: 86400000
                }
                {
                  durationMs: 604800000
                }
                {
                  durationMs: 2592000000
                }
                {
                  durationMs: 7776000000
                }
              ]
              allowCustom: true
            }
          }
        ]
        style: 'pills'
        queryType: 0
        resourceType: 'microsoft.insights/components'
      }
    }
    {
      type: 3
      name: 'runs-by-outcome'
      customWidth: '50'
      content: {
        version: 'KqlItem/1.0'
        title: 'Runs per day, by mode and outcome'
        query: loadTextContent('../workbook/runs-by-outcome.kql')
        size: 0
        queryType: 0
        resourceType: 'microsoft.insights/components'
        crossComponentResources: [
          appInsights.id
        ]
        timeContext: {
          durationMs: 0
        }
        timeContextFromParameter: 'TimeRange'
        visualization: 'barchart'
      }
    }
    {
      type: 3
      name: 'users-per-run'
      customWidth: '50'
      content: {
        version: 'KqlItem/1.0'
        title: 'Users sent, unchanged and skipped per run'
        query: loadTextContent('../workbook/users-per-run.kql')
        size: 0
        queryType: 0
        resourceType: 'microsoft.insights/components'
        crossComponentResources: [
          appInsights.id
        ]
        timeContext: {
          durationMs: 0
        }
        timeContextFromParameter: 'TimeRange'
        visualization: 'timechart'
      }
    }
    {
      type: 3
      name: 'unchanged-ratio'
      customWidth: '50'
      content: {
        version: 'KqlItem/1.0'
        title: 'Unchanged users, % of those sent or unchanged, per run'
        query: loadTextContent('../workbook/unchanged-ratio.kql')
        size: 0
        queryType: 0
        resourceType: 'microsoft.insights/components'
        crossComponentResources: [
          appInsights.id
        ]
        timeContext: {
          durationMs: 0
        }
        timeContextFromParameter: 'TimeRange'
        visualization: 'timechart'
      }
    }
    {
      type: 3
      name: 'run-phases'
      customWidth: '50'
      content: {
        version: 'KqlItem/1.0'
        title: 'Run duration by phase (seconds): Graph read, upload, queue, total'
        query: loadTextContent('../workbook/run-phases.kql')
        size: 0
        queryType: 0
        resourceType: 'microsoft.insights/components'
        crossComponentResources: [
          appInsights.id
        ]
        timeContext: {
          durationMs: 0
        }
        timeContextFromParameter: 'TimeRange'
        visualization: 'timechart'
      }
    }
    {
      type: 3
      name: 'job-durations'
      customWidth: '50'
      content: {
        version: 'KqlItem/1.0'
        title: 'Import job duration from queue to end (minutes), per day'
        query: loadTextContent('../workbook/job-durations.kql')
        size: 0
        queryType: 0
        resourceType: 'microsoft.insights/components'
        crossComponentResources: [
          appInsights.id
        ]
        timeContext: {
          durationMs: 0
        }
        timeContextFromParameter: 'TimeRange'
        visualization: 'timechart'
      }
    }
    {
      type: 3
      name: 'job-errors'
      customWidth: '50'
      content: {
        version: 'KqlItem/1.0'
        title: 'Import jobs not succeeded, jobs re-sent and users with errors, per day'
        query: loadTextContent('../workbook/job-errors.kql')
        size: 0
        queryType: 0
        resourceType: 'microsoft.insights/components'
        crossComponentResources: [
          appInsights.id
        ]
        timeContext: {
          durationMs: 0
        }
        timeContextFromParameter: 'TimeRange'
        visualization: 'barchart'
      }
    }
    {
      type: 3
      name: 'failures'
      content: {
        version: 'KqlItem/1.0'
        title: 'Failed runs and jobs not succeeded (newest 100)'
        query: loadTextContent('../workbook/failures.kql')
        size: 0
        queryType: 0
        resourceType: 'microsoft.insights/components'
        crossComponentResources: [
          appInsights.id
        ]
        timeContext: {
          durationMs: 0
        }
        timeContextFromParameter: 'TimeRange'
        visualization: 'table'
      }
    }
  ]
  fallbackResourceIds: [
    appInsights.id
  ]
}

// A workbook's name is a GUID; this one is stable per resource group and
// Application Insights resource, so provisioning again updates it in place.
resource workbook 'Microsoft.Insights/workbooks@2023-06-01' = {
  name: guid(resourceGroup().id, applicationInsightsName, 'profilesync-workbook')
  location: location
  tags: tags
  kind: 'shared'
  properties: {
    displayName: displayName
    category: 'workbook'
    version: 'Notebook/1.0'
    // The resource the workbook belongs to (listed under its Workbooks), in
    // lower case as the service keeps it (terraform-provider-azurerm refuses
    // any other: hashicorp/terraform-provider-azurerm#27755).
    sourceId: toLower(appInsights.id)
    serializedData: string(content)
  }
}

output workbookId string = workbook.id
output workbookName string = workbook.name
